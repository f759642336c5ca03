"""Settings of `orchestra serve`: flag > ORCHESTRA_* variable > --config file > default, one
definition each (transport/config.py); the default file; errors that name their source."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import trio
from orchestra.transport import api
from orchestra.transport.cli import _settings, build_parser, main
from orchestra.transport.config import (
    SERVE_SETTINGS,
    ConfigError,
    default_file,
    read_environment,
    read_file,
    resolve,
)

import orchestra
from tests.e2e.test_process import ORCHESTRA

DEFAULTS = {s.name: s.default for s in SERVE_SETTINGS}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}


def _serve_settings(argv: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]):
    for key in [k for k in os.environ if k.startswith("ORCHESTRA_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return _settings(build_parser().parse_args(["serve", *argv]))


# -- version --

def test_version_is_read_from_the_installed_metadata():
    assert orchestra.__version__ == importlib.metadata.version("orchestra-sidecar")
    assert api.VERSION == orchestra.__version__


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "orchestra", "--version"],
    [*ORCHESTRA, "--version"],
])
def test_orchestra_version_prints_it(command):
    out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"orchestra {importlib.metadata.version('orchestra-sidecar')}"


def test_the_version_costs_nothing_until_asked_for():
    """`orchestra agent` starts through transport/cli.py: reading the metadata waits for a use."""
    code = ("import sys, orchestra.transport.cli; print('importlib.metadata' in sys.modules, "
            "'dataclasses' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["False", "False"], out.stderr


# -- precedence --

@pytest.mark.parametrize("flag, env, file, expected", [
    (True, True, True, "flag"),
    (False, True, True, "env"),
    (False, False, True, "file"),
    (False, False, False, "default"),
    (True, False, True, "flag"),
    (True, True, False, "flag"),
])
def test_flag_over_environment_over_file_over_default(tmp_path, monkeypatch, flag, env, file, expected):
    roots = {name: tmp_path / name for name in ("flag", "env", "file")}
    for path in roots.values():
        path.mkdir()
    # one setting of each kind: an integer, seconds, a choice, a switch, a path, a table
    given = {
        "flag": ["--port", "1001", "--shutdown-grace", "1.5", "--sync", "full", "--no-rate-limits",
                 "--root", str(roots["flag"]), "--project", f"a={roots['flag']}"],
        "env": {"ORCHESTRA_PORT": "1002", "ORCHESTRA_SHUTDOWN_GRACE": "2.5", "ORCHESTRA_SYNC": "FULL",
                "ORCHESTRA_RATE_LIMITS": "false", "ORCHESTRA_ROOT": str(roots["env"]),
                "ORCHESTRA_PROJECT": f"a={roots['env']}"},
        "file": 'port = 1003\nshutdown_grace = 3\nsync = "full"\nrate_limits = false\nroot = "file"\n'
                '[project]\na = "file"\n',
    }
    config = tmp_path / "orchestra.toml"
    config.write_text(given["file"])
    argv = (["--config", str(config)] if file else []) + (given["flag"] if flag else [])
    args = _serve_settings(argv, monkeypatch, given["env"] if env else {})
    want = {
        "flag": (1001, 1.5, "full", False, roots["flag"]),
        "env": (1002, 2.5, "full", False, roots["env"]),
        "file": (1003, 3.0, "full", False, roots["file"]),
        "default": (3001, 3.0, "normal", True, None),
    }[expected]
    assert (args.port, args.shutdown_grace, args.sync, args.rate_limits, args.root) == want
    assert args.project == ([("a", want[4])] if expected != "default" else [])


def test_the_config_file_can_come_from_orchestra_config(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text("max_spawn_depth = 7\n")
    args = _serve_settings([], monkeypatch, {"ORCHESTRA_CONFIG": str(config)})
    assert args.max_spawn_depth == 7


def test_a_switch_from_the_file_is_turned_off_by_its_no_flag(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text("fault_injection = true\n")
    assert _serve_settings(["--config", str(config)], monkeypatch, {}).fault_injection is True
    assert _serve_settings(["--config", str(config), "--no-fault-injection"], monkeypatch, {}).fault_injection is False
    assert _serve_settings([], monkeypatch, {"ORCHESTRA_FAULT_INJECTION": "1"}).fault_injection is True


def test_a_misspelt_variable_is_warned_of():
    from orchestra.transport.config import misspelt_variables

    environ = {"ORCHESTRA_PORTT": "1", "ORCHESTRA_URL": "http://x", "ORCHESTRA_PORT": "1", "HOME": "/"}
    assert misspelt_variables(SERVE_SETTINGS, environ) == [
        "environment variable ORCHESTRA_PORTT is not a setting; did you mean ORCHESTRA_PORT?"]


def test_an_empty_variable_counts_as_unset(monkeypatch):
    assert _serve_settings([], monkeypatch, {"ORCHESTRA_PORT": ""}).port == 3001


def test_relative_paths_in_the_file_are_taken_from_its_folder(tmp_path, monkeypatch):
    (tmp_path / "etc" / "code").mkdir(parents=True)
    (tmp_path / "etc" / "profiles.toml").write_text("")
    config = tmp_path / "etc" / "orchestra.toml"
    config.write_text('data_dir = "data"\nroot = "code"\nprofiles = "profiles.toml"\n')
    monkeypatch.chdir(tmp_path)
    args = _serve_settings(["--config", "etc/orchestra.toml"], monkeypatch, {})
    assert args.data_dir == tmp_path / "etc" / "data"
    assert args.root == tmp_path / "etc" / "code"
    assert args.profiles == tmp_path / "etc" / "profiles.toml"


def test_a_list_setting_from_each_source(tmp_path):
    """The kind for a repeatable flag of plain values (e.g. globs)."""
    import argparse

    from orchestra.transport.config import Setting, add_flags

    globs = Setting("withhold", str, [], "globs never inlined", kind="list", metavar="GLOB")
    parser = argparse.ArgumentParser()
    add_flags(parser, [globs])
    flags = vars(parser.parse_args(["--withhold", "*.pem", "--withhold", "secrets/**"]))
    (tmp_path / "c.toml").write_text('withhold = ["a b", "*.key"]\n')
    assert resolve([globs], flags, {}, None).values == {"withhold": ["*.pem", "secrets/**"]}
    assert resolve([globs], {}, {"ORCHESTRA_WITHHOLD": "'a b' *.key"}, None).values == {"withhold": ["a b", "*.key"]}
    assert resolve([globs], {}, {}, tmp_path / "c.toml").values == {"withhold": ["a b", "*.key"]}
    assert resolve([globs], {}, {}, None).values == {"withhold": []}
    assert "withhold = []" in default_file([globs])
    (tmp_path / "bad.toml").write_text('withhold = "*.pem"\n')
    with pytest.raises(ConfigError, match="key 'withhold': must be an array of strings"):
        read_file([globs], tmp_path / "bad.toml")


def test_every_value_setting_reads_its_default_as_a_variable():
    for s in SERVE_SETTINGS:
        if s.kind == "value" and s.default is not None:
            assert read_environment([s], {s.env: str(s.default)}) == {s.name: s.default}, s.name
        elif s.kind == "switch":
            assert read_environment([s], {s.env: str(s.default).lower()}) == {s.name: s.default}, s.name


def test_every_setting_has_a_flag_a_variable_and_a_key():
    names = [s.name for s in SERVE_SETTINGS]
    assert len(set(names)) == len(names)
    for s in SERVE_SETTINGS:
        assert s.flag == "--" + s.name.replace("_", "-") and s.env == "ORCHESTRA_" + s.name.upper()


# -- the default file --

def test_the_default_file_loads_as_the_defaults(tmp_path):
    text = default_file(SERVE_SETTINGS)
    path = tmp_path / "defaults.toml"
    path.write_text(text)
    assert resolve(SERVE_SETTINGS, {}, {}, path).values == DEFAULTS
    written = tomllib.loads(text)
    for s in SERVE_SETTINGS:  # each is written, or shown commented where it has no value to write
        assert s.name in written or f"# {s.name} = " in text or f"# [{s.name}]" in text, s.name
        assert s.env in text and s.flag in text


def test_the_commented_examples_of_the_default_file_are_valid(tmp_path):
    """Uncommenting every example line gives a file the server accepts (its paths aside)."""
    lines = default_file(SERVE_SETTINGS).splitlines()
    examples = [line[2:] for line in lines if line.startswith("# ") and (" = " in line or line.startswith("# ["))
                and not line.startswith("# accepts ")]
    document = tomllib.loads("\n".join(examples))
    assert {"data_dir", "root", "profiles", "project", "jwt_public_key", "jwt_previous_key"} <= set(document)


def test_print_defaults_writes_it(capsys):
    assert main(["config", "--print-defaults"]) == 0
    assert capsys.readouterr().out == default_file(SERVE_SETTINGS)


def test_config_show_names_each_source(tmp_path, monkeypatch, capsys):
    config = tmp_path / "c.toml"
    config.write_text("port = 9\n")
    for key in [k for k in os.environ if k.startswith("ORCHESTRA_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("ORCHESTRA_HOST", "0.0.0.0")
    assert main(["config", "--show", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "port = 9  (" + str(config) + ")" in out
    assert "host = 0.0.0.0  (ORCHESTRA_HOST)" in out
    assert "sync = normal  (default)" in out
    assert f"root = {Path.cwd()}  (default)" in out


# -- help --

def test_serve_help_shows_every_default_variable_and_choice():
    out = subprocess.run([*ORCHESTRA, "serve", "--help"], capture_output=True, text=True, timeout=30,
                         env={**_clean_env(), "COLUMNS": "200"})
    assert out.returncode == 0
    for s in SERVE_SETTINGS:
        assert s.flag in out.stdout and s.env in out.stdout, s.name
        assert f"default: {s.shown_default()}" in out.stdout, s.name
    assert "{debug,info,warning,error,critical}" in out.stdout and "{normal,full}" in out.stdout


# -- errors name their source --

@pytest.mark.parametrize("text, words", [
    ("shutdown_grase = 3\n", ["unknown key 'shutdown_grase'", "did you mean 'shutdown_grace'"]),
    ("port = 70000\n", ["key 'port'", "70000 is not an integer from 0 to 65535"]),
    ('port = "80"\n', ["key 'port'", "must be an integer"]),
    ("port = true\n", ["key 'port'", "must be an integer"]),
    ("shutdown_grace = nan\n", ["key 'shutdown_grace'", "seconds"]),
    ('log_level = "bogus"\n', ["key 'log_level'", "one of debug, info"]),
    ('rate_limits = "no"\n', ["key 'rate_limits'", "true or false"]),
    ('root = "does-not-exist"\n', ["key 'root'", "not an existing directory"]),
    ("project = 3\n", ["key 'project'", "table"]),
    ("[project]\nweb = 3\n", ["key 'project'", "'web' must be a string"]),
    ("port = = 3\n", ["not valid TOML"]),
])
def test_a_bad_file_is_one_error_naming_the_file_and_key(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_file(SERVE_SETTINGS, path)
    message = str(info.value)
    assert message.startswith(f"config file {path}: ") and "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("name, text, word", [
    ("ORCHESTRA_PORT", "http", "not an integer"),
    ("ORCHESTRA_LOG_LEVEL", "bogus", "one of debug"),
    ("ORCHESTRA_RATE_LIMITS", "maybe", "true or false"),
    ("ORCHESTRA_CONTEXT_SWEEP", "-1", "seconds"),
    ("ORCHESTRA_PROJECT", "p1=/does/not/exist", "existing directory"),
    ("ORCHESTRA_MAX_JSON_DEPTH", "300", "from 2 to 200"),
])
def test_a_bad_variable_is_one_error_naming_it(name, text, word):
    with pytest.raises(ConfigError) as info:
        read_environment(SERVE_SETTINGS, {name: text})
    assert str(info.value).startswith(f"environment variable {name}: ") and word in str(info.value)


def test_a_missing_config_file_is_one_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        read_file(SERVE_SETTINGS, tmp_path / "nope.toml")


@pytest.mark.parametrize("case", ["file", "env", "flag", "missing"])
def test_the_real_command_refuses_a_bad_setting_with_one_line(tmp_path, case):
    config = tmp_path / "c.toml"
    config.write_text("max_body_bytes = 0\n")
    env = {**_clean_env(), "ORCHESTRA_DATA_DIR": str(tmp_path / "data")}
    argv = [*ORCHESTRA, "serve", "--port", "0"]
    if case == "file":
        argv += ["--config", str(config)]
    elif case == "env":
        env["ORCHESTRA_LOG_LEVEL"] = "bogus"
    elif case == "flag":
        argv += ["--log-level", "bogus"]
    else:
        argv += ["--config", str(tmp_path / "missing.toml")]
    try:
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("orchestra serve started with a bad setting")
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert {"file": "max_body_bytes", "env": "ORCHESTRA_LOG_LEVEL", "flag": "--log-level",
            "missing": "missing.toml"}[case] in out.stderr


# -- a real server from a config file --

def _popen(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def test_serve_runs_from_a_config_file_with_the_environment_on_top(tmp_path):
    config = tmp_path / "etc" / "orchestra.toml"
    config.parent.mkdir()
    config.write_text('port = 3001\ndata_dir = "data"\nrate_limits = false\nlog_level = "debug"\n')
    env = {**_clean_env(), "ORCHESTRA_PORT": "0", "ORCHESTRA_LOG_LEVEL": "warning"}
    proc = _popen([*ORCHESTRA, "serve", "--config", str(config)], env)
    try:
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        assert line.startswith("listening on http://127.0.0.1:") and not line.strip().endswith(":3001"), line
        assert (tmp_path / "etc" / "data" / "jwt.secret").exists()
        assert (tmp_path / "etc" / "data" / "orchestra.db").exists()
        proc.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(proc.wait, 15) == 0
        assert "DEBUG" not in proc.stderr.read()  # the variable's warning, not the file's debug
    finally:
        if proc.poll() is None:
            proc.kill()


def test_token_finds_the_data_dir_in_the_config_file(tmp_path, monkeypatch, capsys):
    import jwt
    from orchestra.transport.auth import load_secret

    for key in [k for k in os.environ if k.startswith("ORCHESTRA_")]:
        monkeypatch.delenv(key)
    secret = load_secret(tmp_path / "data", create=True)
    config = tmp_path / "c.toml"
    config.write_text('data_dir = "data"\nport = 5\n')
    assert main(["token", "--config", str(config), "--project", "p1", "--agent-type", "x"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), secret, algorithms=["HS256"])
    assert claims["project_id"] == "p1"
    assert not (Path.cwd() / "data").exists()


def test_token_takes_the_data_dir_as_serve_does(tmp_path, monkeypatch, capsys):
    import jwt
    from orchestra.transport.auth import load_secret

    for key in [k for k in os.environ if k.startswith("ORCHESTRA_")]:
        monkeypatch.delenv(key)
    secrets = {name: load_secret(tmp_path / name, create=True) for name in ("flag", "env", "file")}
    config = tmp_path / "c.toml"
    config.write_text('data_dir = "file"\n')
    monkeypatch.setenv("ORCHESTRA_CONFIG", str(config))
    base = ["token", "--project", "p1", "--agent-type", "x"]

    def signer() -> str:
        token = capsys.readouterr().out.strip()
        return next(name for name, secret in secrets.items()
                    if _verifies(jwt, token, secret))

    assert main(base) == 0 and signer() == "file"
    monkeypatch.setenv("ORCHESTRA_DATA_DIR", str(tmp_path / "env"))
    assert main(base) == 0 and signer() == "env"
    assert main([*base, "--data-dir", str(tmp_path / "flag")]) == 0 and signer() == "flag"


def _verifies(jwt, token: str, secret: bytes) -> bool:
    try:
        jwt.decode(token, secret, algorithms=["HS256"])
    except jwt.InvalidSignatureError:
        return False
    return True
