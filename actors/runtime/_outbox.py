"""A bounded outbound queue with many producers that never wait and one consumer."""

from __future__ import annotations

from collections import deque
from typing import Any

import trio

__all__ = ["Outbox"]


class Outbox:
    """Frames waiting to be written to one connection.

    Bounded by message count and by bytes. :meth:`offer` never blocks: past either bound it
    refuses the frame and marks the outbox *overflowed*; the consumer then closes the
    connection (protocol close 4008) instead of letting memory grow.
    """

    def __init__(self, max_messages: int = 1000, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._frames: deque[tuple[bytes | None, Any]] = deque()
        self._bytes = 0
        self._lot = trio.lowlevel.ParkingLot()
        self.overflowed = False
        self.closed = False

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def offer(self, frame: bytes | None, tag: Any = None) -> bool:
        """Queue ``frame`` (with a ``tag`` handed back to the consumer beside it). A ``None``
        frame is a note: nothing to send, only its tag for the consumer, in order with the
        frames (it counts as a message, with no bytes).

        False if it would pass a bound (or the outbox is closed).
        """
        if self.closed or self.overflowed:
            return False
        size = 0 if frame is None else len(frame)
        if len(self._frames) >= self.max_messages or self._bytes + size > self.max_bytes:
            self.overflowed = True
            self._lot.unpark_all()
            return False
        self._frames.append((frame, tag))
        self._bytes += size
        self._lot.unpark_all()
        return True

    def pending_tags(self) -> list[Any]:
        """The tags of what is still queued (not yet taken by the consumer), oldest first."""
        return [tag for _, tag in self._frames if tag is not None]

    def close(self) -> None:
        self.closed = True
        self._lot.unpark_all()

    async def get_batch(self, max_frames: int = 64) -> list[tuple[bytes | None, Any]]:
        """Wait for frames and take up to ``max_frames`` of them, oldest first.

        Raises :class:`trio.EndOfChannel` once closed or overflowed (after the queue is
        drained if closed normally, at once if overflowed).
        """
        while not self._frames:
            if self.closed or self.overflowed:
                raise trio.EndOfChannel
            await self._lot.park()
        if self.overflowed:
            raise trio.EndOfChannel
        batch: list[tuple[bytes | None, Any]] = []
        while self._frames and len(batch) < max_frames:
            item = self._frames.popleft()
            if item[0] is not None:
                self._bytes -= len(item[0])
            batch.append(item)
        return batch
