"""deploy/Dockerfile built and run for real (docs/deployment.md, "A container"): the image
builds, the server in it answers /health and an authenticated request, reads the history of a
code base mounted from the host (owned by another user), reaps what a spawned agent leaves
behind, passes its health check and stops cleanly on SIGTERM.

Opt-in (minutes: it installs packages into the image): ``pytest -m container``. Needs podman
(or docker); skipped without one. The base image is ``$ORCHESTRA_TEST_PYTHON_IMAGE``, else
``python:3.11-slim`` if present or pullable, else (a machine that reaches Debian's archive but
no image registry) a stand-in made with mmdebstrap: Debian bookworm with its Python 3.11 and
pip, the way python:3.11-slim has them, cached as :data:`STANDIN` for later runs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/orchestra-test:latest"
STANDIN = "localhost/orchestra-test-python:3.11"
ENGINE = shutil.which("podman") or shutil.which("docker")
#: an agent type whose command leaves a child behind (the server then ends its whole group)
PROFILES = """\
[profiles.forker]
command = ["python", "-c", "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); print('forked', flush=True)"]
"""


def _engine(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert ENGINE is not None
    out = subprocess.run([ENGINE, *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{ENGINE} {' '.join(args)}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def _podman() -> bool:
    return ENGINE is not None and Path(ENGINE).name == "podman"


def _has_image(name: str) -> bool:
    return _engine("image", "inspect", name, check=False).returncode == 0


def _standin(tmp: Path) -> str:
    """Debian bookworm's Python 3.11 with pip, as python:3.11-slim has them (``python`` on the
    PATH, pip allowed to install into it), trusting what this machine trusts."""
    if _has_image(STANDIN):
        return STANDIN
    if shutil.which("mmdebstrap") is None:
        pytest.skip("no python:3.11-slim, no registry to pull it from and no mmdebstrap to make a stand-in")
    rootfs = tmp / "rootfs.tar"
    subprocess.run(["mmdebstrap", "--variant=minbase", "--include=python3,python3-pip,ca-certificates",
                    "bookworm", str(rootfs)], check=True, capture_output=True, timeout=1200)
    _engine("import", str(rootfs), f"{STANDIN}-rootfs", timeout=600)
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", tmp / "ca-certificates.crt")
    (tmp / "Containerfile").write_text(
        f"FROM {STANDIN}-rootfs\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
        "RUN ln -s /usr/bin/python3 /usr/local/bin/python && ln -s /usr/bin/pip3 /usr/local/bin/pip"
        " && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED\nENV LANG=C.UTF-8\n")
    _engine("build", *_build_flags(), "-t", STANDIN, str(tmp), timeout=600)
    return STANDIN


def _base(tmp: Path) -> str:
    wanted = os.environ.get("ORCHESTRA_TEST_PYTHON_IMAGE")
    if wanted:
        return wanted
    if _has_image("python:3.11-slim") or _engine("pull", "python:3.11-slim", timeout=300, check=False).returncode == 0:
        return "python:3.11-slim"
    return _standin(tmp)


def _build_flags() -> list[str]:
    # chroot isolation: a build's RUN steps need no OCI runtime (none works inside some VMs)
    return ["--isolation", "chroot", "--network", "host"] if _podman() else ["--network", "host"]


def _run_flags() -> list[str]:
    """Flags of ``run`` that work on this machine: plain first; else runc with limits no higher
    than this process's (a sandbox may refuse an OCI runtime's raising of them)."""
    nofile = os.sysconf("SC_OPEN_MAX")
    for flags in ([], ["--runtime", "runc", "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=4096:4096"]):
        if _engine("run", "--rm", *flags, IMAGE, "--version", check=False, timeout=120).returncode == 0:
            return flags
    out = _engine("run", "--rm", IMAGE, "--version", check=False)
    pytest.fail(f"the image was built but no container can run here: {out.stderr.strip()[-500:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"still not true after {timeout} s: {what}")


def _http(port: int, method: str, path: str, token: str | None = None, body: object = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _healthy(port: int) -> bool:
    try:
        return _http(port, "GET", "/health")[0] == 200
    except OSError:
        return False


def _processes(name: str) -> list[tuple[int, str, str]]:
    """(pid, state, command) of each process in the container (the image has no ps)."""
    code = ("import os\nfor p in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try: s = open(f'/proc/{p}/stat').read()\n    except OSError: continue\n"
            "    print(p, s.rsplit(')', 1)[1].split()[0], s[s.index('(') + 1:s.rindex(')')])\n")
    out = _engine("exec", name, "python", "-c", code)
    return [(int(p), state, cmd) for p, state, cmd in (line.split(" ", 2) for line in out.stdout.splitlines())]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if ENGINE is None:
        pytest.skip("no podman or docker here")
    tmp = tmp_path_factory.mktemp("image")
    flags = [*_build_flags(), "--build-arg", f"PYTHON_IMAGE={_base(tmp)}"]
    if _podman():  # docker finds deploy/Dockerfile.dockerignore by the Dockerfile's name
        flags += ["--format", "docker", "--ignorefile", str(ROOT / "deploy" / "Dockerfile.dockerignore")]
    _engine("build", *flags, "-f", str(ROOT / "deploy" / "Dockerfile"), "-t", IMAGE, str(ROOT), timeout=1800)
    yield IMAGE


def test_the_image_runs_the_server_as_the_docs_say(image, tmp_path):
    inspect = json.loads(_engine("image", "inspect", image).stdout)[0]
    config = inspect.get("Config") or inspect["config"]
    assert config["User"] == "orchestra" and "3001/tcp" in config["ExposedPorts"]
    health = config.get("Healthcheck") or inspect["Healthcheck"]  # docker: in Config; podman: beside it
    assert config["Entrypoint"][:2] == ["tini", "--"] and health["Test"][0] == "CMD"

    # a code base as an operator has it: a git repository of the host's (root's), not uid 10001's
    repo = tmp_path / "web"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "shop.py").write_text("def checkout(cart):\n    return sum(cart)\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "iss-7: checkout totals"], cwd=repo, check=True)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "profiles.toml").write_text(PROFILES)
    subprocess.run(["chmod", "-R", "a+rX", str(repo), str(etc)], check=True)  # readable by uid 10001

    name, volume, port = f"orchestra-test-{uuid.uuid4().hex[:8]}", f"orchestra-test-{uuid.uuid4().hex[:8]}", _free_port()
    flags = _run_flags()
    _engine("run", "-d", "--name", name, *flags, "-p", f"127.0.0.1:{port}:3001",
            "-v", f"{volume}:/var/lib/orchestra", "-v", f"{repo}:/code/web", "-v", f"{etc}:/etc/orchestra:ro",
            image, "serve", "--project", "web=/code/web", "--profiles", "/etc/orchestra/profiles.toml")
    try:
        _until(lambda: _healthy(port), "the server in the container answers /health")
        token = _engine("exec", name, "orchestra", "token", "--project", "web",
                        "--agent-type", "chief-architect").stdout.strip().splitlines()[-1]
        status, stored = _http(port, "POST", "/api/results", token, {
            "agent_id": "a1", "agent_type": "chief-architect", "issue_id": "iss-7", "result": {"status": "success"}})
        assert status == 200 and stored["stored"], stored

        status, context = _http(port, "GET", "/api/context/iss-7/python-specialist?task=checkout", token)
        assert status == 200, context
        commits = context["context"]["git_context"]["recent_commits"]
        assert any("iss-7: checkout totals" in json.dumps(c) for c in commits), context["context"]["git_context"]

        # an agent whose child outlives it: the server ends the group, PID 1 reaps the child
        status, spawned = _http(port, "POST", "/api/agents/spawn", token, {"agent_type": "forker", "issue_id": "iss-7"})
        assert status == 201, spawned

        def ended() -> bool:
            return _http(port, "GET", f"/api/agents/{spawned['agent_id']}/status", token)[1]["state"] == "exited"

        _until(ended, "the forking agent exited")
        _until(lambda: not [p for p in _processes(name) if p[1] == "Z"], "no zombie left in the container", 10)
        assert {cmd for pid, _, cmd in _processes(name) if pid == 1} == {"tini"}

        if _podman():  # docker runs the HEALTHCHECK on its own schedule
            assert _engine("healthcheck", "run", name, check=False).returncode == 0
        started = time.monotonic()
        _engine("stop", "-t", "30", name, timeout=60)
        assert time.monotonic() - started < 25  # SIGTERM reached the server: no kill after the grace
        state = json.loads(_engine("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, _engine("logs", name, check=False).stderr[-3000:]
        logs = _engine("logs", name, check=False)
        assert "Traceback" not in logs.stdout + logs.stderr
    finally:
        _engine("rm", "-f", name, check=False)
        _engine("volume", "rm", "-f", volume, check=False)
