"""Idempotency keys: what a keyed write is, and the bounded table of recent answers. Pure.

A write that carries a key is scoped by (project, token ``sub``, key). Its answer is committed
in the same transaction as the write it guards (see ``store.IdempotencyRow``), so a repeat is
answered from the store after any restart; this module only keeps the recent ones in memory,
so that most repeats cost no store round trip.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import InvalidRequest

__all__ = [
    "MAX_KEY_LENGTH",
    "IdempotencyEntry",
    "IdempotencyTable",
    "IdemKey",
    "fingerprint",
    "validate_key",
]

MAX_KEY_LENGTH = 256
#: What one entry costs besides its key and answer (dict slot, tuple, dataclass): an estimate,
#: so that many tiny answers are bounded too.
_ENTRY_OVERHEAD = 200


def validate_key(value: Any) -> str:
    """A key is a printable string of 1 to 256 characters; else InvalidRequest (REQ_001)."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_KEY_LENGTH or not value.isprintable():
        raise InvalidRequest(
            "idempotency_key",
            f"the idempotency key must be a printable string of 1 to {MAX_KEY_LENGTH} characters",
        )
    return value


def fingerprint(op: str, body: Any) -> bytes:
    """What a repeat must match: the operation and its body, keys sorted (JSON-canonical)."""
    try:
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        raise InvalidRequest("body", "the body cannot be encoded as JSON") from None
    return hashlib.blake2b(op.encode() + b"\x00" + canonical, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class IdemKey:
    """The key a write carries: its scope within the project and what a repeat must match."""

    sub: str
    key: str
    fingerprint: bytes

    @property
    def scope(self) -> tuple[str, str]:
        return (self.sub, self.key)


@dataclass(frozen=True, slots=True)
class IdempotencyEntry:
    fingerprint: bytes
    answer: bytes  # the encoded original answer
    expires_at: float  # wall-clock time (epoch seconds)


class IdempotencyTable:
    """The recent keys of one project, least recently used dropped first.

    Bounded by ``max_entries`` and ``max_bytes`` (keys and answers, plus a per-entry
    estimate). A dropped or never-seen key is not an answer: the caller looks it up in the
    store. An expired entry is never returned.
    """

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, str], IdempotencyEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _size(scope: tuple[str, str], entry: IdempotencyEntry) -> int:
        return len(scope[0]) + len(scope[1]) + len(entry.answer) + len(entry.fingerprint) + _ENTRY_OVERHEAD

    def get(self, scope: tuple[str, str], now: float) -> IdempotencyEntry | None:
        entry = self._entries.get(scope)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self._remove(scope)
            return None
        self._entries.move_to_end(scope)
        return entry

    def put(self, scope: tuple[str, str], entry: IdempotencyEntry) -> None:
        self._remove(scope)
        size = self._size(scope, entry)
        if size > self.max_bytes or self.max_entries <= 0:
            return  # too big to keep here: the store still answers it
        self._entries[scope] = entry
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            old, dropped = self._entries.popitem(last=False)
            self.bytes -= self._size(old, dropped)

    def _remove(self, scope: tuple[str, str]) -> None:
        entry = self._entries.pop(scope, None)
        if entry is not None:
            self.bytes -= self._size(scope, entry)
