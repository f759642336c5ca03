"""The server's WebSocket connection (transport/websocket.py ``WsConnection``): writes from
several tasks, and the close codes a client sees."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
import trio_websocket
import wsproto.frame_protocol
from orchestra.actors.session import ConnectionGone
from orchestra.transport.websocket import CHECKPOINT_EVERY, WsConnection, text_frame

from tests.transport.test_hostile import raw_ws_frames

PING = b'{"id":1,"op":"ping"}'
TEXT, CONT, BINARY, CLOSE, WS_PING = 0x1, 0x0, 0x2, 0x8, 0x9


async def test_writes_from_several_tasks_go_out_whole_and_in_call_order():
    """The session's writer, the task answering a request and the reader (pongs) may write at
    once: each write waits for the one before it instead of colliding on the socket."""
    left, right = trio.testing.lockstep_stream_pair()  # a write blocks until the peer reads
    conn = WsConnection(left, 1 << 20)
    conn.ws.receive_data(b"GET /ws HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                         b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n")
    got = bytearray()

    async def read_head() -> None:
        while b"\r\n\r\n" not in got:
            got.extend(await right.receive_some())

    async def read_all() -> None:
        while chunk := await right.receive_some():
            got.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_head)
        assert await conn.accept(b"", [])
    head = len(got)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.send_many, [b'"a"', b'"b"'])
        await trio.testing.wait_all_tasks_blocked()  # blocked in its write: no one reads yet
        nursery.start_soon(conn.send, b'"c"')
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(read_all)
        await trio.testing.wait_all_tasks_blocked()
        await left.aclose()  # the reader sees the end
    assert bytes(got[head:]) == b'\x81\x03"a"\x81\x03"b"\x81\x03"c"'


async def test_a_write_after_the_connection_ended_says_it_is_gone():
    left, right = trio.testing.memory_stream_pair()
    conn = WsConnection(left, 1 << 20)
    await right.aclose()
    assert not await conn.accept(b"GET /ws HTTP/1.1\r\n", [])  # the request never completed
    with pytest.raises(ConnectionGone):
        await conn.send(b"{}")


@pytest.mark.parametrize(("frames", "code"), [
    ([(TEXT, b'{"id":1,"op":"ping","x":"\xff"}')], 1007),  # text that is not UTF-8
    ([(TEXT, PING[:5], False), (TEXT, PING, True)], 1002),  # a new message inside a fragmented one
    ([(0x3, b"reserved opcode")], 1002),
])
async def test_a_frame_the_protocol_refuses_closes_with_its_code(server, frames, code):
    assert (await raw_ws_frames(server.port, server.token(), frames, settle=5.0))[0] == code


async def test_a_websocket_ping_is_answered_with_its_pong_and_requests_go_on(server):
    async with trio_websocket.open_websocket("127.0.0.1", server.port, "/ws", use_ssl=False,
                                             extra_headers=[("authorization", f"Bearer {server.token()}")]) as ws:
        with trio.fail_after(10):
            await ws.ping(b"are you there")  # returns once the matching pong arrived
            await ws.send_message(PING.decode())
            assert b"pong" in (await ws.get_message()).encode()


async def test_a_close_from_the_client_is_replied_to(server):
    async with trio_websocket.open_websocket("127.0.0.1", server.port, "/ws", use_ssl=False,
                                             extra_headers=[("authorization", f"Bearer {server.token()}")]) as ws:
        await ws.send_message(PING.decode())
        await ws.get_message()
        with trio.fail_after(5):  # the close handshake completes: the server replied
            await ws.aclose(4321, "bye")
        assert ws.closed is not None and ws.closed.code == 4321


async def _upgraded(stream: trio.abc.Stream, peer: trio.abc.Stream) -> tuple[WsConnection, int]:
    conn = WsConnection(stream, 1 << 20)
    conn.ws.receive_data(b"GET /ws HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                         b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n")
    assert await conn.accept(b"", [])
    head = b""
    while b"\r\n\r\n" not in head:
        head += await peer.receive_some()
    return conn, len(head.split(b"\r\n\r\n", 1)[1])


async def test_a_frame_the_socket_takes_in_part_is_finished_before_the_next_one():
    """``send_now`` never waits: what the kernel did not take is kept and written first by the
    next write, so frames still go out whole and in order."""
    a, b = trio.socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    left, right = trio.SocketStream(a), trio.SocketStream(b)
    conn, extra = await _upgraded(left, right)
    assert extra == 0
    big = b'"' + b"y" * 2_000_000 + b'"'
    assert conn.send_now(b'"small"') and not conn.backlogged
    assert conn.send_now(big) and conn.backlogged  # the socket took some of it
    assert not conn.send_now(b'"next"')  # nothing may overtake the rest: the usual way
    got = bytearray()

    async def read_all() -> None:
        while chunk := await right.receive_some():
            got.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await conn.send_many([])  # the rest of the frame, as the session's writer does
        assert not conn.backlogged
        await conn.send(b'"next"')
        await left.aclose()
    assert bytes(got) == text_frame(b'"small"') + text_frame(big) + text_frame(b'"next"')


async def test_send_now_writes_nothing_while_a_write_is_under_way_or_after_the_end():
    left, right = trio.testing.memory_stream_pair()
    conn, _ = await _upgraded(left, right)
    assert not conn.send_now(b"{}")  # not a socket: always the usual way
    a, b = trio.socket.socketpair()
    sock_conn, _ = await _upgraded(trio.SocketStream(a), trio.SocketStream(b))
    await sock_conn._end()  # the connection ended (as after a close)
    assert not sock_conn.send_now(b"{}")
    with pytest.raises(ConnectionGone):
        await sock_conn.send(b"{}")
    b.close()


async def test_receiving_a_flood_of_frames_lets_other_tasks_run():
    """Frames the socket already holds are taken without a checkpoint, but never more than
    ``CHECKPOINT_EVERY`` in a row."""
    a, b = trio.socket.socketpair()
    conn, _ = await _upgraded(trio.SocketStream(a), trio.SocketStream(b))
    client = wsproto.frame_protocol.FrameProtocol(client=True, extensions=[])
    await trio.SocketStream(b).send_all(b"".join(client.send_data(PING.decode(), True) for _ in range(64)))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        await trio.lowlevel.checkpoint()
        before = ticks
        for _ in range(64):
            assert await conn.receive() == PING.decode()
        assert ticks - before >= 64 // CHECKPOINT_EVERY - 1
        nursery.cancel_scope.cancel()
