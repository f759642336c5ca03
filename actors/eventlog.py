"""A project's retained events: cursors, floor, trimming by count and bytes. Pure: no I/O, no
clock (times are passed in), no actor.

Each retained event is a small :class:`Entry`: the encoded event (the bytes sent to clients and
stored), and the few fields that matching needs without decoding it. The event's ``data`` is
decoded only for a filter that looks into it (:meth:`Entry.decoded`).
"""

from __future__ import annotations

import bisect
import itertools
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

__all__ = ["Entry", "EventLog"]


class Sized(Protocol):
    """What trimming needs of an event: its cursor and its encoded size."""

    @property
    def cursor(self) -> int: ...

    @property
    def body(self) -> bytes: ...


@dataclass(slots=True)
class Entry:
    """One retained event. ``body`` is the encoded event object; never changed."""

    cursor: int
    event_type: str
    topic: str | None
    expires_at: float  # seconds since the epoch
    body: bytes

    @classmethod
    def from_body(cls, body: bytes, expires_at: float) -> Entry:
        """An entry for an encoded event (as loaded from the store)."""
        event = orjson.loads(body)
        return cls.of(event, body, expires_at)

    @classmethod
    def of(
        cls, event: dict[str, Any], body: bytes, expires_at: float, cursor: int | None = None
    ) -> Entry:
        """An entry for ``event`` already encoded as ``body`` (``cursor``: its number, if known).

        The entry keeps an exact-size copy of ``body``: orjson's output keeps the capacity it
        reserved (about 4 KiB for a small event, several times the size of a large one), which
        would otherwise stay allocated per retained event.
        """
        topic = event.get("topic")
        return cls(
            int(event["cursor"]) if cursor is None else cursor, sys.intern(event["event_type"]),
            sys.intern(topic) if isinstance(topic, str) else None, expires_at,
            bytes(memoryview(body)),
        )

    def decoded(self) -> dict[str, Any]:
        """The event object (decoded anew on every call: the log keeps only the bytes)."""
        return orjson.loads(self.body)  # type: ignore[no-any-return]


class EventLog:
    """Events in cursor order, at most ``max_events`` of them and ``max_bytes`` of encoded
    events (the oldest go first; the newest event is always kept).

    ``floor``: every event at or below this cursor may be gone (trimmed). Expired events are
    skipped by readers that pass ``now`` and dropped by :meth:`drop_expired`; they do not move
    the floor (an expired event is never delivered again, so nothing is missed).
    """

    def __init__(self, max_events: int, max_bytes: int, floor: int = 0) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("an event log keeps at least one event and one byte")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.floor = floor
        self._entries: list[Entry] = []
        self._cursors: list[int] = []
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def trim_below(self, new: Sequence[Sized]) -> int:
        """The cursor below which events go if ``new`` is appended (0: none go). Changes
        nothing: the store is told before :meth:`append` runs."""
        keep = self._keep_from(new)
        return self._at(keep, new).cursor if keep else 0

    def append(self, new: Iterable[Entry]) -> None:
        """Add events (cursors greater than every retained one), then trim to the bounds."""
        new = list(new)
        keep = self._keep_from(new)
        self._entries.extend(new)
        self._cursors.extend(e.cursor for e in new)
        self.bytes += sum(len(e.body) for e in new)
        if keep:
            self._cut(keep)

    def after(self, cursor: int, now: float | None = None) -> Iterator[Entry]:
        """The retained events after ``cursor``, oldest first; unexpired at ``now`` if given.

        A view, not a copy: do not append while iterating.
        """
        start = bisect.bisect_right(self._cursors, cursor)
        events = itertools.islice(self._entries, start, None)
        if now is None:
            return events
        return (e for e in events if e.expires_at > now)

    def drop_expired(self, now: float) -> int:
        """Forget events expired at ``now``; how many."""
        kept = [e for e in self._entries if e.expires_at > now]
        dropped = len(self._entries) - len(kept)
        if dropped:
            self._entries = kept
            self._cursors = [e.cursor for e in kept]
            self.bytes = sum(len(e.body) for e in kept)
        return dropped

    def _keep_from(self, new: Sequence[Sized]) -> int:
        """Index (in retained + new) of the oldest event kept after appending ``new``."""
        total = len(self._entries) + len(new)
        size = self.bytes + sum(len(e.body) for e in new)
        keep = max(0, total - self.max_events)
        size -= sum(len(self._at(i, new).body) for i in range(keep))
        while size > self.max_bytes and keep < total - 1:
            size -= len(self._at(keep, new).body)
            keep += 1
        return keep

    def _at(self, i: int, new: Sequence[Sized]) -> Sized:
        n = len(self._entries)
        return self._entries[i] if i < n else new[i - n]

    def _cut(self, keep: int) -> None:
        self.floor = max(self.floor, self._entries[keep - 1].cursor)
        self.bytes -= sum(len(e.body) for e in self._entries[:keep])
        del self._entries[:keep]
        del self._cursors[:keep]
