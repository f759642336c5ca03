"""Hostile values for tests/transport/test_hostile.py, by class, and the JSON they travel as.

Each class strategy draws the values the issue saw break the server first (hypothesis tries
the simplest element of a ``sampled_from`` first), then generated variations. Values that no
JSON encoder of the standard kind can write (nesting past ~250 levels, integers past 64 bits,
lone surrogates) are written by :func:`to_json`, which builds the text itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

__all__ = ["Deep", "FIELD_CLASSES", "Raw", "depth_of", "encoding_cases", "jwt_token", "to_json", "token_cases"]


@dataclass(frozen=True)
class Deep:
    """A JSON value nested ``levels`` deep (objects or arrays), ending in a scalar."""

    levels: int
    kind: str = "object"

    def text(self) -> str:
        if self.kind == "object":
            return '{"a":' * self.levels + "1" + "}" * self.levels
        return "[" * self.levels + "1" + "]" * self.levels


@dataclass(frozen=True)
class Raw:
    """JSON text put into a document as it is (may be invalid JSON on purpose)."""

    text: str


def to_json(value: Any) -> bytes:
    """``value`` as JSON text, writing :class:`Deep`, :class:`Raw`, huge ints and lone
    surrogates, which orjson refuses."""
    return _text(value).encode("utf-8", "surrogatepass")


def _text(value: Any) -> str:
    if isinstance(value, Deep):
        return value.text()
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii: a lone surrogate becomes a "\ud800" escape


def depth_of(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    depth, level = 0, [value]
    while level:
        depth += 1
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, dict):
                nxt.extend(v.values())
            elif isinstance(v, list):
                nxt.extend(v)
        level = nxt
    return depth


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


_deep = st.one_of(
    st.sampled_from([Deep(300), Deep(1100, "array"), Deep(253), Deep(1024, "array"), Deep(600)]),
    st.builds(Deep, st.integers(250, 1100), st.sampled_from(["object", "array"])),
)
_ints = st.one_of(
    st.sampled_from([2**63, -(2**63) - 1, 10**30, -(10**30), 2**64, -1, 2**63 - 1, 10**400]),
    st.integers(min_value=-(10**40), max_value=10**40),
)
_floats = st.one_of(
    st.sampled_from([1e308, -1e308, 5e-324, 1.5, -0.0]),
    st.floats(allow_nan=False, allow_infinity=False),
)
_strings = st.one_of(
    st.sampled_from([
        "a\x00b", "\x00", "\x01\x02\x1b[31m\x7f", "\ud800", "x\udfffy", "x" * 10_000, "\r\n\t",
        "é" * 3000, "\u202e\u200b\ufeff", "🙂" * 500,
    ]),
    st.text(min_size=300, max_size=10_000),
    st.text(st.characters(codec="utf-8", exclude_categories=()), max_size=64),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x1F), min_size=1, max_size=40),
)
_types = st.sampled_from([
    [], {}, True, False, None, ["x"], {"a": 1}, 0, 1.5, [[[]]], {"status": "x"}, [None] * 50,
])
_cursors = st.one_of(
    st.sampled_from([
        _b64(f"r1:{2**63}"), "9" * 20, _b64(f"r1:{10**30}"), _b64(f"r1:{-(2**63) - 1}"), "1" * 21,
        _b64("r1:" + "9" * 5000), _b64("r1:-1"), _b64("r1:1e5"), _b64("r2:1"), "-1", "１２３",
        "18446744073709551616", "0" * 20, "!!!", "r1:9",
    ]),
    st.integers(2**63, 10**30).map(lambda n: _b64(f"r1:{n}")),
    st.integers(2**63, 10**20 - 1).map(str),
)
_dates = st.one_of(
    st.sampled_from([
        "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999-23:59",
        "0001-01-01T00:00:00.000001+23:59", "2026-02-30T00:00:00Z", "+275760-09-13T00:00:00Z",
        "2026-01-01T00:00:00+24:00", "0000-00-00", "9999-12-31", "0001-01-01",
    ]),
    st.datetimes().map(lambda d: d.isoformat() + "-23:59"),
    st.datetimes().map(lambda d: d.isoformat() + "+23:59"),
)
_ids = st.one_of(
    st.sampled_from([
        "iss\x00-1", "a/b", "..", "../../etc/passwd", "x" * 300, "x" * 10_000, " ", "*", "%2F", "%00",
        "\n", "-", "--help", "HEAD~1", "@{-1}", "a..b", ":(glob)*",
    ]),
    st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), min_size=1, max_size=300),
)

#: the classes of hostile values put into one argument (field) of a request
FIELD_CLASSES: dict[str, st.SearchStrategy[Any]] = {
    "depth": _deep,
    "int": _ints,
    "float": _floats,
    "string": _strings,
    "type": _types,
    "cursor": _cursors,
    "date": _dates,
    "id": _ids,
}


# -- tokens --


def _seg(obj: Any) -> str:
    return base64.urlsafe_b64encode(to_json(obj)).decode().rstrip("=")


def jwt_token(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT written by hand, so that claims can be what no JWT library writes (exp = 10**400)."""
    signing_input = f"{_seg(header)}.{_seg(claims)}"
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(sig).decode().rstrip('=')}"


def token_cases(secret: bytes, project: str, agent_type: str) -> dict[str, str]:
    """Hostile bearer tokens by name: badly signed, expired, absurd or missing claims."""
    now = int(time.time())
    good = {"sub": "hostile-tok", "agent_type": agent_type, "project_id": project, "iat": now, "exp": now + 3600}
    hs = {"alg": "HS256", "typ": "JWT"}

    def signed(**changes: Any) -> str:
        claims = {**good, **changes}
        return jwt_token(hs, {k: v for k, v in claims.items() if v is not _DROP}, secret)

    return {
        "alg none": jwt_token({"alg": "none", "typ": "JWT"}, good, None),
        "alg None": jwt_token({"alg": "None"}, good, None),
        "alg HS512": jwt_token({"alg": "HS512"}, good, secret),
        "alg nested": jwt_token({"alg": Deep(300)}, good, secret),
        "wrong key": jwt_token(hs, good, b"not-the-secret"),
        "expired": signed(exp=now - 3600),
        "exp 10**400": signed(exp=10**400),
        "exp 1e300": signed(exp=1e300),
        "exp 2**63": signed(exp=2**63),
        "exp -2**63-1": signed(exp=-(2**63) - 1),
        "exp string": signed(exp="tomorrow"),
        "exp nested": signed(exp=Deep(300)),
        "iat 10**400": signed(iat=10**400),
        "nbf 10**400": signed(nbf=10**400),
        "no exp": signed(exp=_DROP),
        "no sub": signed(sub=_DROP),
        "no agent_type": signed(agent_type=_DROP),
        "no project_id": signed(project_id=_DROP),
        "project * without admin": signed(project_id="*"),
        "project * with admin claim string": signed(project_id="*", admin="true"),
        "sub NUL": signed(sub="a\x00b"),
        "sub 10k": signed(sub="s" * 10_000),
        "sub nested": signed(sub=Deep(300)),
        "project nested": signed(project_id=Deep(600)),
        "permissions nested": signed(permissions=Deep(300, "array")),
        "permissions string": signed(permissions="admin"),
        "agent_type huge": signed(agent_type="t" * 5000),
        "claims not an object": f"{_seg(hs)}.{_seg([1, 2])}.sig",
        "claims deep": f"{_seg(hs)}.{base64.urlsafe_b64encode(Deep(1100).text().encode()).decode()}.x",
        "not base64": "a.b.c",
        "garbage": "not-a-jwt",
        "empty segments": "..",
        "header not json": "eyJhbGciOi.eyJzdWIiOiJ4In0.x",
        "long": "a" * 8000,
    }


_DROP = object()


def encoding_cases() -> dict[str, bytes]:
    """Bodies (and WebSocket text) that are not the JSON object a request is."""
    return {
        "invalid utf-8": b'{"agent_id":"\xff\xfe","issue_id":"\xc3\x28"}',
        "overlong utf-8 NUL": b'{"issue_id":"\xc0\x80"}',
        "utf-8 surrogate": b'{"issue_id":"\xed\xa0\x80"}',
        "escaped lone surrogate": b'{"issue_id":"\\ud800","agent_type":"\\udfff"}',
        "utf-16": '{"issue_id":"x"}'.encode("utf-16"),
        "bom": b'\xef\xbb\xbf{"issue_id":"x"}',
        "nul bytes": b'{"issue_id":"x"}\x00\x00',
        "truncated": b'{"issue_id":"x',
        "not an object: array": b"[1,2,3]",
        "not an object: string": b'"x"',
        "not an object: null": b"null",
        "not an object: number": b"1e400",
        "deep array 1100": Deep(1100, "array").text().encode(),
        "deep object 1100": Deep(1100).text().encode(),
        "duplicate keys": b'{"issue_id":"a","issue_id":{"x":1}}',
        "number overflow": b'{"limit":1e400,"max_bytes":-1e400,"timeout":123456789012345678901234567890}',
        "empty": b"",
        "whitespace": b"   \n ",
    }


#: query strings that are not valid percent-encoding, or decode to something hostile
BAD_QUERIES = [
    "limit=%ZZ", "cursor=%", "q=%ff%fe", "issue_id=%c0%80", "q=%00", "since=%ed%a0%80",
    "%=%", "&&&==&", "a=" + "%41" * 2000, "filter=%22%5C", "timeout=%2B1e400", "limit=1%00",
    "since=%39%39%39%39%39%39%39%39%39%39%39%39%39%39%39%39%39%39%39%39",
]

#: path segments (already on the wire) that are not valid percent-encoding
BAD_SEGMENTS = ["%ZZ", "%", "%ff%fe", "%c0%80", "%00", "%ed%a0%80", "..%2F..%2F", "%2e%2e"]
