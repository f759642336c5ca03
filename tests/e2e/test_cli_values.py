"""Command-line values: a bad one is refused with one clear line on stderr and exit status 2."""

from __future__ import annotations

import os
import subprocess

import jwt
import pytest
from orchestra.transport.cli import build_parser, main

from tests.e2e.test_process import ORCHESTRA


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], flag: str) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert flag in err


@pytest.mark.parametrize("argv, flag", [
    (["--port", "70000"], "--port"),
    (["--port", "-1"], "--port"),
    (["--port", "http"], "--port"),
    (["--max-body-bytes", "-5"], "--max-body-bytes"),
    (["--max-body-bytes", "0"], "--max-body-bytes"),
    (["--event-retention", "-1"], "--event-retention"),
    (["--shutdown-grace", "-2"], "--shutdown-grace"),
    (["--shutdown-grace", "nan"], "--shutdown-grace"),
    (["--context-sweep", "-0.5"], "--context-sweep"),
    (["--context-sweep", "inf"], "--context-sweep"),
    (["--root", "/does/not/exist"], "--root"),
    (["--log-level", "bogus"], "--log-level"),
    (["--max-json-depth", "0"], "--max-json-depth"),
    (["--max-json-depth", "300"], "--max-json-depth"),
    (["--project", "p1=/does/not/exist"], "--project"),
    (["--project", "nopath"], "--project"),
    (["--max-agents-per-project", "0"], "--max-agents-per-project"),
    (["--max-spawn-depth", "0"], "--max-spawn-depth"),
    (["--max-spawn-depth", "101"], "--max-spawn-depth"),
    (["--agent-stop-grace", "601"], "--agent-stop-grace"),
    (["--agent-stop-grace", "nan"], "--agent-stop-grace"),
])
def test_serve_refuses_bad_values(capsys, argv, flag):
    _refused(capsys, ["serve", *argv], flag)


def test_serve_accepts_good_values(tmp_path):
    args = build_parser().parse_args([
        "serve", "--port", "0", "--root", str(tmp_path), "--log-level", "debug", "--context-sweep", "0",
        "--shutdown-grace", "0", "--max-json-depth", "32", "--project", f"p1={tmp_path}",
        "--max-agents-per-project", "8", "--max-spawn-depth", "1", "--agent-stop-grace", "0.5",
    ])
    assert args.port == 0 and args.log_level == "debug" and args.max_json_depth == 32
    assert (args.max_agents_per_project, args.max_spawn_depth, args.agent_stop_grace) == (8, 1, 0.5)
    assert args.root == tmp_path.resolve()


@pytest.mark.parametrize("argv, flag", [
    (["--ttl", "-5"], "--ttl"),
    (["--ttl", "0"], "--ttl"),
    (["--ttl", "0.5"], "--ttl"),
    (["--ttl", "1e300"], "--ttl"),
    (["--ttl", "nan"], "--ttl"),
    (["--sub", "a\x00b"], "--sub"),
    (["--agent-type", " "], "--agent-type"),
])
def test_token_refuses_bad_values(capsys, argv, flag, tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_JWT_SECRET", "s" * 32)
    base = {"--project": "p1", "--agent-type": "python-specialist", "--data-dir": str(tmp_path)}
    base.pop(argv[0], None)
    full = ["token", *[x for kv in base.items() for x in kv], *argv]
    with pytest.raises(SystemExit) as info:
        main(full)
    assert info.value.code == 2
    err = capsys.readouterr()
    assert err.out == ""  # no token printed
    assert len(err.err.strip().splitlines()) == 1 and flag in err.err


def test_token_with_a_good_ttl(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_JWT_SECRET", "s" * 32)
    assert main(["token", "--project", "p1", "--agent-type", "python-specialist", "--ttl", "60",
                 "--data-dir", str(tmp_path)]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), "s" * 32, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 60


def test_the_real_command_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "ORCHESTRA_DATA_DIR": str(tmp_path), "ORCHESTRA_JWT_SECRET": ""}
    try:
        out = subprocess.run([*ORCHESTRA, "serve", "--port", "70000"], env=env, capture_output=True,
                             text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("orchestra serve --port 70000 started serving")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().count("\n") == 0 and "--port" in out.stderr
