"""Rate limiter and JWT checks: pure, no server."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from orchestra.actors.profiles import Profiles
from orchestra.transport.auth import Auth, load_secret
from orchestra.transport.errors import ApiError
from orchestra.transport.ratelimit import RateLimiter


def test_token_bucket_refills_at_its_rate():
    rl = RateLimiter()
    decisions = [rl.take("a", rate=10, burst=5, now=0.0) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert decisions[4].remaining == 0
    assert decisions[5].retry_after == pytest.approx(0.1)
    assert rl.take("a", 10, 5, now=0.1).allowed  # one token back after 1/rate
    assert not rl.take("a", 10, 5, now=0.1).allowed
    assert rl.take("b", 10, 5, now=0.1).allowed  # buckets are per key
    full = rl.take("a", 10, 5, now=100.0)
    assert full.allowed and full.remaining == 4  # never above the burst


def test_buckets_are_bounded():
    rl = RateLimiter(max_keys=3)
    for key in "abcd":
        rl.take(key, 1, 1, 0.0)
    assert len(rl._buckets) == 3


def _claims(**kw):
    return {"sub": "a1", "agent_type": "python-specialist", "project_id": "p1",
            "exp": int(time.time()) + 60, **kw}


def test_hs256_and_permissions_from_profile():
    auth = Auth(b"k" * 32, Profiles())
    p = auth.verify(jwt.encode(_claims(), b"k" * 32, algorithm="HS256"))
    assert p.permissions == {"read_context", "write_results", "publish_events"}
    arch = auth.verify(jwt.encode(_claims(agent_type="chief-architect"), b"k" * 32, algorithm="HS256"))
    assert "spawn_agents" in arch.permissions
    explicit = auth.verify(jwt.encode(_claims(permissions=["read_context"]), b"k" * 32, algorithm="HS256"))
    assert explicit.permissions == {"read_context"}
    with pytest.raises(ApiError) as info:
        auth.verify(jwt.encode(_claims(project_id="*"), b"k" * 32, algorithm="HS256"))
    assert info.value.code == "AUTH_001"


def test_leeway_is_at_most_one_second():
    auth = Auth(b"k" * 32, Profiles())
    ok = jwt.encode(_claims(exp=int(time.time()) - 0), b"k" * 32, algorithm="HS256")
    auth.verify(ok, now=time.time())
    late = jwt.encode(_claims(exp=int(time.time()) - 3), b"k" * 32, algorithm="HS256")
    with pytest.raises(ApiError) as info:
        auth.verify(late)
    assert info.value.code == "AUTH_002"


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_asymmetric_keys_by_configuration(alg):
    if alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    token = jwt.encode(_claims(), key, algorithm=alg)
    assert Auth(None, Profiles(), public_key=public, public_algorithm=alg).verify(token).sub == "a1"
    with pytest.raises(ApiError):  # not configured: refused
        Auth(b"k" * 32, Profiles()).verify(token)
    hs = jwt.encode(_claims(), b"k" * 32, algorithm="HS256")
    with pytest.raises(ApiError):  # HS256 not configured on a public-key-only server
        Auth(None, Profiles(), public_key=public, public_algorithm=alg).verify(hs)


def test_secret_file_is_created_once_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.delenv("ORCHESTRA_JWT_SECRET", raising=False)
    first = load_secret(tmp_path, create=True)
    assert (tmp_path / "jwt.secret").stat().st_mode & 0o777 == 0o600
    assert load_secret(tmp_path) == first
    monkeypatch.setenv("ORCHESTRA_JWT_SECRET", "from-env")
    assert load_secret(tmp_path) == b"from-env"
