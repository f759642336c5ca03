"""JWT verification and minting, and permissions.

HS256 with a shared secret by default; RS256, ES256 and EdDSA with a public key by
configuration. ``alg: none`` and any algorithm not configured are refused. Verified tokens are
cached until they expire, so a connection or a repeated bearer costs one dict lookup.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt

from ..actors.errors import InvalidRequest
from ..actors.lru import LruCache
from ..actors.principal import Principal
from ..actors.profiles import PERMISSIONS, Profiles
from ..actors.records import MAX_ID_CHARS, validate_id
from .errors import ApiError

__all__ = [
    "Auth", "KeyFileError", "NoSigningKey", "Principal", "load_previous_key", "load_public_key",
    "load_secret", "read_secret_file", "LEEWAY_SECONDS", "MAX_CLAIM_TIME",
]

LEEWAY_SECONDS = 1.0
_ASYMMETRIC = {"RS256", "ES256", "EdDSA"}
#: ``exp``, ``iat`` and ``nbf`` are seconds since 1970 up to the end of year 9999 (UTC).
MAX_CLAIM_TIME = 253_402_300_799
_TIME_CLAIMS = ("exp", "iat", "nbf")


SECRET_FILE = "jwt.secret"
_KEY_TYPES = {"RS256": "an RSA key", "ES256": "an EC P-256 key", "EdDSA": "an Ed25519 key"}


class KeyFileError(OSError):
    """A signing or verification key that cannot be used; the message names the file (or the
    variable) and what to do."""


class NoSigningKey(KeyFileError):
    """The data dir holds no signing key yet (the first ``orchestra serve`` makes it)."""


def load_secret(data_dir: Path, create: bool = False) -> bytes:
    """The HS256 secret: ``ORCHESTRA_JWT_SECRET``, else ``<data-dir>/jwt.secret``.

    Without ``create`` a data dir without a key raises ``NoSigningKey``: a token signed with a
    key the server does not have would only be refused. ``orchestra serve`` creates it (mode
    0600, exclusively: of two processes starting at once both get the one key)."""
    env = os.environ.get("ORCHESTRA_JWT_SECRET")
    if env:
        return env.encode()
    path = Path(data_dir) / SECRET_FILE
    try:
        return read_secret_file(path)
    except NoSigningKey:
        if not create:
            raise
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return read_secret_file(path)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def read_secret_file(path: Path) -> bytes:
    """An HS256 secret from a file (surrounding whitespace is not part of it)."""
    try:
        secret = Path(path).read_bytes().strip()
    except FileNotFoundError:
        raise NoSigningKey(
            f"no signing key in {path.parent} ({path.name} is made by the first `orchestra serve "
            f"--data-dir {path.parent}`; or set ORCHESTRA_JWT_SECRET as the server has it)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror or exc}") from None
    if len(secret) < 16:
        raise KeyFileError(f"the key file {path} holds {len(secret)} bytes; a secret needs at least 16")
    return secret


def loose_permissions(path: Path) -> bool:
    """The key file can be read by users other than its owner."""
    try:
        return Path(path).stat().st_mode & 0o077 != 0
    except OSError:
        return False


def load_public_key(path: Path, algorithm: str) -> Any:
    """A PEM public key for ``algorithm``, parsed (a garbage file is refused at start, not at
    the first token)."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror or exc}") from None
    try:
        return jwt.get_algorithm_by_name(algorithm).prepare_key(pem)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise KeyFileError(
            f"the key file {path} is not a PEM public key for {algorithm} ({_KEY_TYPES[algorithm]})"
        ) from None


def load_previous_key(path: Path, algorithm: str) -> tuple[str, Any]:
    """The key before a rotation, for verification only: a PEM public key (of ``algorithm``)
    if the file holds one, else an HS256 secret."""
    try:
        head = Path(path).read_bytes()[:64]
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror or exc}") from None
    if head.lstrip().startswith(b"-----BEGIN"):
        return algorithm, load_public_key(path, algorithm)
    return "HS256", read_secret_file(path)


class Auth:
    def __init__(
        self,
        secret: bytes | None,
        profiles: Profiles,
        *,
        public_key: bytes | None = None,
        public_algorithm: str | None = None,
        previous_keys: tuple[tuple[str, Any], ...] = (),
        cache_size: int = 10_000,
    ) -> None:
        self.secret = secret
        self.profiles = profiles
        #: by algorithm, the keys a signature is checked with, in order; only ``secret`` signs
        self.keys: dict[str, list[Any]] = {}
        if secret:
            self.keys["HS256"] = [secret]
        if public_key is not None:
            if public_algorithm not in _ASYMMETRIC:
                raise ValueError(f"public key algorithm must be one of {sorted(_ASYMMETRIC)}")
            self.keys[public_algorithm] = [public_key]
        for alg, key in previous_keys:  # a rotation: the old key still verifies, never signs
            self.keys.setdefault(alg, []).append(key)
        #: verified tokens, until they expire (a repeated bearer costs one lookup)
        self._cache: LruCache[str, Principal] = LruCache(cache_size)

    def verify(self, token: str, now: float | None = None) -> Principal:
        now = time.time() if now is None else now
        principal = self._cache.get(token)
        if principal is not None:
            if principal.exp + LEEWAY_SECONDS < now:
                self._cache.pop(token)
                raise ApiError(401, "AUTH_002", "the token has expired; get a new one")
            return principal
        principal = self._decode(token)
        self._cache.put(token, principal)
        return principal

    def _decode(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise ApiError(401, "AUTH_001", "the token is not a well-formed JWT") from None
        alg = header.get("alg")
        keys = self.keys.get(alg) if isinstance(alg, str) else None
        if not isinstance(alg, str) or not keys:
            raise ApiError(401, "AUTH_001", f"token algorithm {alg!r} is not accepted by this server")
        try:
            claims = self._verified(token, alg, keys)
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "AUTH_002", "the token has expired; get a new one") from None
        except jwt.PyJWTError as exc:
            raise ApiError(401, "AUTH_001", f"invalid token: {exc}") from None
        except (OverflowError, ValueError, TypeError):  # a time claim no number can hold
            raise ApiError(401, "AUTH_001", "invalid token: a time claim is out of range") from None
        for name in _TIME_CLAIMS:
            value = claims.get(name)
            if name in claims and (
                isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_CLAIM_TIME
            ):
                raise ApiError(
                    401, "AUTH_001",
                    f"invalid token: claim '{name}' must be a number of seconds from 0 to {MAX_CLAIM_TIME} (year 9999)",
                )
        sub, agent_type, project = (
            _id_claim(claims, "sub"), _id_claim(claims, "agent_type"), _id_claim(claims, "project_id")
        )
        perms = claims.get("permissions")
        if perms is None:
            granted = set(self.profiles.get(agent_type).permissions)
        elif isinstance(perms, list) and all(isinstance(p, str) for p in perms):
            granted = set(perms) & PERMISSIONS
        else:
            raise ApiError(401, "AUTH_001", "invalid token: claim 'permissions' must be a list of strings")
        if claims.get("admin") is True:
            granted.add("admin")
        if project == "*" and "admin" not in granted:
            raise ApiError(401, "AUTH_001", "invalid token: project_id '*' needs the admin permission")
        return Principal(sub, agent_type, project, frozenset(granted), float(claims["exp"]), claims)

    @staticmethod
    def _verified(token: str, alg: str, keys: list[Any]) -> dict[str, Any]:
        """The claims, checked with the first key whose signature matches."""
        for key in keys[:-1]:
            try:
                return _decode(token, key, alg)
            except jwt.InvalidSignatureError:
                continue
        return _decode(token, keys[-1], alg)

    def mint(
        self,
        *,
        sub: str,
        agent_type: str,
        project_id: str,
        ttl: float = 3600,
        permissions: list[str] | None = None,
        admin: bool = False,
        spawned: bool = False,
    ) -> str:
        """A token signed with this server's secret. ``spawned``: issued to a spawned agent
        (claim ``spawned: true``), accepted only while that agent (``sub``) has not ended."""
        if not self.secret:
            raise ApiError(400, "REQ_001", "this server has no signing key (public-key mode)")
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": sub, "agent_type": agent_type, "project_id": project_id,
            "iat": now, "exp": now + int(ttl), "jti": secrets.token_hex(8),
        }
        if permissions is not None or admin:
            perms = list(permissions) if permissions is not None else sorted(
                self.profiles.get(agent_type).permissions
            )
            if admin and "admin" not in perms:
                perms.append("admin")
            claims["permissions"] = perms
        if spawned:
            claims["spawned"] = True
        return jwt.encode(claims, self.secret, algorithm="HS256")


def _decode(token: str, key: Any, alg: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=[alg], leeway=LEEWAY_SECONDS,
        options={"require": ["exp", "sub"], "verify_aud": False},
    )
    return claims


def _id_claim(claims: dict[str, Any], name: str) -> str:
    """A claim that must hold an id (see ``validate_id``)."""
    try:
        return validate_id(name, claims.get(name))
    except InvalidRequest:
        raise ApiError(
            401, "AUTH_001", f"invalid token: claim '{name}' must be a string of 1 to "
            f"{MAX_ID_CHARS} characters without control characters",
        ) from None


def bearer(header_value: bytes | None) -> str | None:
    if not header_value:
        return None
    scheme, _, token = header_value.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
