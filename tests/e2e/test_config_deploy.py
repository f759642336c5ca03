"""What docs/deployment.md tells an operator to do, done: a backup of the store taken while the
server writes, and a rotation of the signing key that keeps the tokens of the old one working
until they are dropped."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from orchestra.actors.profiles import Profiles
from orchestra.transport.auth import Auth, load_previous_key, load_public_key
from orchestra.transport.errors import ApiError

from tests.conftest import result_body
from tests.e2e.test_process import ORCHESTRA, client
from tests.waiting import until

# -- backup while writing --


def _backup_api(source: Path, target: Path) -> None:
    """sqlite3's online backup (what the sqlite3 shell's `.backup` does)."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _vacuum_into(source: Path, target: Path) -> None:
    src = sqlite3.connect(source)
    try:
        src.execute("VACUUM INTO ?", (str(target),))
    finally:
        src.close()


@pytest.mark.parametrize("method", [_backup_api, _vacuum_into])
async def test_a_backup_taken_while_writing_holds_every_acknowledged_row(server, tmp_path, method):
    tok = server.token()
    acked: list[str] = []
    backup = tmp_path / "backup.db"
    before: list[str] = []

    async def writer(w: int) -> None:
        i = 0
        while True:
            r = await server.request("POST", "/api/results", tok, result_body(agent_id=f"w{w}", seq=i))
            assert r.status == 200
            acked.append(r.json()["id"])
            i += 1

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for w in range(4):
                nursery.start_soon(writer, w)
            await until(lambda: len(acked) >= 50, "50 results stored")
            before = list(acked)  # acknowledged before the backup began
            await trio.to_thread.run_sync(method, server.system.db_path, backup)
            during = len(acked) - len(before)
            await until(lambda: len(acked) >= len(before) + during + 20, "writes after the backup")
            nursery.cancel_scope.cancel()
    db = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {row[0] for row in db.execute("SELECT id FROM results")}
    finally:
        db.close()
    assert set(before) <= stored
    assert len(stored) < len(acked)  # a snapshot: what came after it is not in it


# -- rotating the signing key --


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
    return {**env, "ORCHESTRA_DATA_DIR": str(data_dir)}


def _start(data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*ORCHESTRA, "serve", "--port", "0", "--no-rate-limits", *extra], env=_env(data_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _token(data_dir: Path) -> str:
    out = subprocess.run([*ORCHESTRA, "token", "--project", "p1", "--agent-type", "python-specialist"],
                         env=_env(data_dir), capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.strip()


async def _statuses(proc: subprocess.Popen[str], *tokens: str) -> list[int]:
    try:
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        assert line.startswith("listening on http://127.0.0.1:"), proc.stderr.read() if not line else line
        h = client(int(line.rsplit(":", 1)[1]))
        return [(await h.request("GET", "/api/results?limit=1", tok)).status for tok in tokens]
    finally:
        proc.send_signal(signal.SIGTERM)
        await trio.to_thread.run_sync(proc.wait, 15)


async def test_rotating_the_signing_key_with_the_previous_one_accepted(tmp_path):
    data = tmp_path / "data"
    assert await _statuses(_start(data)) == []  # the first start makes the key
    old = _token(data)
    # the rotation of docs/deployment.md: keep the old key aside, the next start makes a new one
    (data / "jwt.secret").rename(data / "jwt.secret.previous")
    proc = _start(data, "--jwt-previous-key", str(data / "jwt.secret.previous"))
    await until((data / "jwt.secret").exists, "the new key made", timeout=20)
    new = _token(data)
    assert await _statuses(proc, old, new) == [200, 200]
    assert jwt.decode(new, (data / "jwt.secret").read_bytes().strip(), algorithms=["HS256"])  # signed by the new key
    # once every old token has expired, the previous key goes
    assert await _statuses(_start(data), old, new) == [401, 200]


def _ec_pair() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pem


def _claims() -> dict[str, object]:
    return {"sub": "a1", "agent_type": "python-specialist", "project_id": "p1", "exp": int(time.time()) + 60}


def test_a_previous_public_key_verifies_beside_the_new_one(tmp_path):
    (old_key, old_pem), (new_key, new_pem), (other_key, _) = _ec_pair(), _ec_pair(), _ec_pair()
    (tmp_path / "old.pem").write_bytes(old_pem)
    (tmp_path / "new.pem").write_bytes(new_pem)
    previous = load_previous_key(tmp_path / "old.pem", "ES256")
    assert previous[0] == "ES256"
    auth = Auth(b"s" * 32, Profiles(), public_key=load_public_key(tmp_path / "new.pem", "ES256"),
                public_algorithm="ES256", previous_keys=(previous,))
    assert auth.verify(jwt.encode(_claims(), old_key, algorithm="ES256")).sub == "a1"
    assert auth.verify(jwt.encode(_claims(), new_key, algorithm="ES256")).sub == "a1"
    with pytest.raises(ApiError) as info:
        auth.verify(jwt.encode(_claims(), other_key, algorithm="ES256"))
    assert info.value.status == 401


def test_a_previous_secret_verifies_but_never_signs(tmp_path):
    (tmp_path / "old").write_bytes(b"o" * 32 + b"\n")
    previous = load_previous_key(tmp_path / "old", "RS256")
    assert previous == ("HS256", b"o" * 32)
    auth = Auth(b"n" * 32, Profiles(), previous_keys=(previous,))
    assert auth.verify(jwt.encode(_claims(), b"o" * 32, algorithm="HS256")).sub == "a1"
    minted = auth.mint(sub="a2", agent_type="x", project_id="p1")
    assert jwt.decode(minted, b"n" * 32, algorithms=["HS256"])["sub"] == "a2"
    with pytest.raises(ApiError):
        auth.verify(jwt.encode(_claims(), b"x" * 32, algorithm="HS256"))
    with pytest.raises(ApiError):  # without the previous key, the old token is refused
        Auth(b"n" * 32, Profiles()).verify(jwt.encode(_claims(), b"o" * 32, algorithm="HS256"))
