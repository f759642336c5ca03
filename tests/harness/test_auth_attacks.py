"""Authentication attack classes not pinned elsewhere (the others: tests/transport/test_hostile.py
token cases, test_http_api.py test_auth_errors and test_project_isolation_and_scoping,
tests/e2e/test_agents_api.py refusals; docs/reliability.md lists them all)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from orchestra.actors.profiles import Profiles
from orchestra.transport.auth import Auth

from orchestra.testing import InProcessServer
from tests.agents_harness import profiles, script
from tests.conftest import result_body
from tests.waiting import until

SLEEPER = script("import time; time.sleep(120)", agent_type="sleeper")


def _claims(**extra) -> dict:
    now = int(time.time())
    return {"sub": "a1", "agent_type": "python-specialist", "project_id": "p1", "iat": now, "exp": now + 600, **extra}


async def _refused(server, token: str, code: str = "AUTH_001") -> None:
    r = await server.request("POST", "/api/results", token, result_body())
    assert r.status == 401 and r.json()["code"] == code, r.body


async def test_a_token_not_yet_valid_is_refused(orchestra_server):
    secret = orchestra_server.auth.secret
    await _refused(orchestra_server, jwt.encode(_claims(nbf=int(time.time()) + 600), secret, algorithm="HS256"))


async def test_a_tampered_payload_is_refused(orchestra_server):
    good = orchestra_server.token("p1")
    header, _, signature = good.split(".")
    forged = base64.urlsafe_b64encode(orjson.dumps({**jwt.decode(good, options={"verify_signature": False}),
                                                     "project_id": "p2", "admin": True})).rstrip(b"=").decode()
    await _refused(orchestra_server, f"{header}.{forged}.{signature}")


def test_hs_rs_confusion_is_refused():
    """A server that takes RS256 tokens: an HS256 token whose HMAC key is the public key's PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    payload = base64.urlsafe_b64encode(orjson.dumps(_claims())).rstrip(b"=")
    sig = base64.urlsafe_b64encode(hmac.new(public, header + b"." + payload, hashlib.sha256).digest()).rstrip(b"=")
    forged = b".".join([header, payload, sig]).decode()
    for auth in (Auth(None, Profiles(), public_key=public, public_algorithm="RS256"),
                 Auth(b"our-own-secret-0123456789-0123456789", Profiles(), public_key=public, public_algorithm="RS256")):
        try:
            auth.verify(forged)
        except Exception as exc:  # noqa: BLE001 - the one expected answer is checked below
            assert getattr(exc, "code", None) == "AUTH_001", exc
        else:
            raise AssertionError("an HS256 token keyed with the public key was accepted")
    assert Auth(None, Profiles(), public_key=public, public_algorithm="RS256").verify(
        jwt.encode(_claims(), key, algorithm="RS256")).sub == "a1"


async def test_a_spawned_agents_token_is_refused_once_the_agent_has_ended(nursery, tmp_path):
    server = await InProcessServer(tmp_path / "d", profiles=profiles(SLEEPER), root=tmp_path).start(nursery)
    try:
        boss = server.token("p1", "chief-architect", sub="boss")
        spawned = (await server.request("POST", "/api/agents/spawn", boss,
                                        {"agent_type": "sleeper", "issue_id": "iss-1"})).json()
        token = spawned["jwt_token"]
        r = await server.request("POST", "/api/results", token, result_body(agent_id=spawned["agent_id"]))
        assert r.status == 200, r.body  # while it runs, its token works
        stopped = await server.request("POST", f"/api/agents/{spawned['agent_id']}/stop", boss, {"grace_seconds": 1})
        assert stopped.json()["state"] == "stopped"

        async def refused() -> bool:
            r = await server.request("GET", "/api/results", token)
            return r.status == 401

        await until(refused, "the ended agent's token refused", timeout=5)
        r = await server.request("POST", "/api/results", token, result_body(agent_id=spawned["agent_id"]))
        assert r.status == 401 and r.json()["code"] == "AUTH_001" and "ended" in r.json()["message"], r.body
        assert (await server.request("GET", "/api/results", boss)).status == 200  # others unaffected
    finally:
        await server.stop()
