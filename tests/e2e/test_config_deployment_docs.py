"""docs/deployment.md shows the files of deploy/ as they are, and they hold up: the unit passes
systemd-analyze, the Dockerfile copies every package folder, the nginx example passes nginx -t,
and the container's environment alone starts a server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.e2e.test_process import ORCHESTRA

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = (ROOT / "docs" / "deployment.md").read_text()
DEPLOY = ROOT / "deploy"


def _block(language: str) -> str:
    (block,) = re.findall(rf"```{language}\n(.*?)```", DEPLOYMENT, flags=re.S)
    return block


def test_the_page_shows_the_files_as_they_are():
    assert _block("ini") == (DEPLOY / "orchestra.service").read_text()
    assert _block("dockerfile") == (DEPLOY / "Dockerfile").read_text()


def test_the_dockerfile_copies_every_package_folder():
    folders = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for folder in folders | {"pyproject.toml", "README.md", "LICENSE"}:
        assert re.search(rf"^COPY .*\b{re.escape(folder)}\b", dockerfile, flags=re.M), folder
        assert f"!{folder}/" in ignore or f"!{folder}" in ignore, folder


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_unit_passes_systemd_analyze():
    out = subprocess.run(["systemd-analyze", "verify", str(DEPLOY / "orchestra.service")],
                         capture_output=True, text=True, timeout=60)
    # the one complaint allowed: this machine has no /opt/orchestra/venv
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if line.strip() and "/opt/orchestra/venv/bin/orchestra" not in line]
    assert problems == []


@pytest.mark.skipif(shutil.which("nginx") is None, reason="no nginx here")
def test_the_nginx_example_passes_nginx_t(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "orchestra.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    # every nginx block of the page, together in one configuration (the later ones reuse the map)
    site = ("\n".join(re.findall(r"```nginx\n(.*?)```", DEPLOYMENT, flags=re.S))
            .replace("/etc/letsencrypt/live/orchestra.example.com/fullchain.pem", str(tmp_path / "cert.pem"))
            .replace("/etc/letsencrypt/live/orchestra.example.com/privkey.pem", str(tmp_path / "key.pem")))
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\nevents {{}}\n"
                    f"http {{\naccess_log off;\n{site}\n}}\n")
    out = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


def test_the_containers_environment_alone_starts_a_server(tmp_path):
    """What the Dockerfile sets (ORCHESTRA_DATA_DIR, ORCHESTRA_HOST, ORCHESTRA_ROOT) and no flag."""
    (tmp_path / "code").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
    env.update(ORCHESTRA_DATA_DIR=str(tmp_path / "data"), ORCHESTRA_HOST="0.0.0.0",
               ORCHESTRA_ROOT=str(tmp_path / "code"), ORCHESTRA_PORT="0")
    proc = subprocess.Popen([*ORCHESTRA, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://0.0.0.0:"), line or proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
