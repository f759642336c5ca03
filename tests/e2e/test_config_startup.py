"""What stops `orchestra serve` (or `orchestra token`) from starting is one line on stderr and a
non-zero exit status, never a traceback; the data dir's key and folder get private modes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.test_process import ORCHESTRA


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
    return {**env, "ORCHESTRA_DATA_DIR": str(data_dir), **extra}


def _fails(argv: list[str], env: dict[str, str], status: int, *words: str) -> str:
    try:
        out = subprocess.run([*ORCHESTRA, *argv], env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"orchestra {' '.join(argv)} did not stop")
    assert "listening" not in out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.returncode == status, out.stderr
    for word in words:
        assert word in out.stderr, out.stderr
    return out.stderr


def _pem_of_ec_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


SERVE = ["serve", "--port", "0"]


def test_a_key_file_that_cannot_be_read(tmp_path):
    (tmp_path / "jwt.secret").mkdir()  # as root, a mode cannot make a file unreadable; a folder can
    _fails(SERVE, _env(tmp_path), 1, "cannot read the key file", "jwt.secret")


def test_an_empty_key_file(tmp_path):
    (tmp_path / "jwt.secret").write_text("\n")
    _fails(SERVE, _env(tmp_path), 1, "jwt.secret", "holds 0 bytes")


def test_a_data_dir_that_cannot_be_made(tmp_path):
    (tmp_path / "file").write_text("")
    _fails(SERVE, _env(tmp_path / "file" / "data"), 1, "data dir", str(tmp_path / "file" / "data"))


def test_a_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "data").write_text("")
    _fails(SERVE, _env(tmp_path / "data"), 1, "data dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder of mode 0500")
def test_a_data_dir_that_cannot_be_written(tmp_path):
    (tmp_path / "data").mkdir(mode=0o500)
    _fails(SERVE, _env(tmp_path / "data"), 1, "data dir")


def test_a_store_that_is_not_a_database(tmp_path):
    (tmp_path / "orchestra.db").write_bytes(b"this is no SQLite file" * 100)
    _fails(SERVE, _env(tmp_path), 1, "orchestra.db", "cannot be opened")


def test_a_store_of_a_newer_release(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "orchestra.db")
    db.execute("PRAGMA user_version = 9999")
    db.close()
    _fails(SERVE, _env(tmp_path), 1, "orchestra.db", "newer than this release")


@pytest.mark.parametrize("content, algorithm", [
    (b"garbage", "RS256"),
    (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "ES256"),
    (None, "RS256"),  # an EC key where RS256 wants an RSA key
    (None, "EdDSA"),
])
def test_a_public_key_that_is_not_one(tmp_path, content, algorithm):
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(content if content is not None else _pem_of_ec_key())
    _fails([*SERVE, "--jwt-public-key", str(pem), "--jwt-algorithm", algorithm], _env(tmp_path / "d"), 1,
           "issuer.pem", f"not a PEM public key for {algorithm}")


def test_a_previous_key_that_is_not_one(tmp_path):
    (tmp_path / "old.secret").write_text("short")
    _fails([*SERVE, "--jwt-previous-key", str(tmp_path / "old.secret")], _env(tmp_path / "d"), 1, "old.secret")


@pytest.mark.parametrize("how", ["flag", "env", "file"])
def test_a_root_that_does_not_exist(tmp_path, how):
    missing = str(tmp_path / "nowhere")
    env, argv = _env(tmp_path / "d"), list(SERVE)
    if how == "flag":
        argv += ["--root", missing]
    elif how == "env":
        env["ORCHESTRA_ROOT"] = missing
    else:
        (tmp_path / "c.toml").write_text(f'root = "{missing}"\n')
        argv += ["--config", str(tmp_path / "c.toml")]
    _fails(argv, env, 2, "nowhere", "not an existing directory")


def test_a_port_in_use(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        _fails(["serve", "--port", str(port)], _env(tmp_path), 1, f"cannot listen on 127.0.0.1:{port}")


def test_a_bad_profiles_file(tmp_path):
    (tmp_path / "profiles.toml").write_text("[python-specialist]\nburst = -3\n")
    _fails([*SERVE, "--profiles", str(tmp_path / "profiles.toml")], _env(tmp_path / "d"), 2, "profiles.toml")


# -- orchestra token --

def test_token_without_a_key_says_so_and_makes_none(tmp_path):
    _fails(["token", "--project", "p1", "--agent-type", "x"], _env(tmp_path), 1,
           "no signing key in", str(tmp_path), "orchestra serve")
    assert not (tmp_path / "jwt.secret").exists()


def test_token_with_an_unreadable_key(tmp_path):
    (tmp_path / "jwt.secret").mkdir()
    _fails(["token", "--project", "p1", "--agent-type", "x"], _env(tmp_path), 1, "cannot read the key file")


# -- modes --

def test_the_data_dir_is_private_and_a_readable_key_is_warned_of(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.Popen([*ORCHESTRA, *SERVE], env=_env(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().startswith("listening on ")
        assert data.stat().st_mode & 0o777 == 0o700
        assert (data / "jwt.secret").stat().st_mode & 0o777 == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert "chmod 600" not in proc.stderr.read()
    (data / "jwt.secret").chmod(0o644)
    proc = subprocess.Popen([*ORCHESTRA, *SERVE], env=_env(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().startswith("listening on ")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert "jwt.secret can be read by other users than its owner; chmod 600 it" in proc.stderr.read()
