"""Events: cursors, the filter grammar, and matching. Pure: no I/O, no clock.

Filter grammar (whitespace around terms is allowed)::

    filter      := term ("," term)*            all terms must hold
    term        := condition ("|" condition)*  any condition may hold
    condition   := ["!"] field ":" value
    field       := name ("." name)*            looked up in data, then the event's own fields
    value       := quoted | comparison | bare
    quoted      := '"' ( [^"\\] | '\\' any )* '"'
    comparison  := (">=" | "<=" | ">" | "<") number
    bare        := [^,|"]+                     "*" and "?" make it a glob
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidFilter

__all__ = ["EventFilter", "decode_cursor", "encode_cursor", "CURSOR_WIDTH", "EVENT_FIELDS", "MAX_CURSOR", "MAX_FILTER_CHARS"]

CURSOR_WIDTH = 20

#: The event's own fields a filter may name when ``data`` has no such key.
EVENT_FIELDS = ("event_type", "topic", "publisher", "agent_type", "correlation_id")


def encode_cursor(n: int) -> str:
    """Cursors are fixed-width decimal strings, so plain string order is event order."""
    return f"{n:020d}"  # CURSOR_WIDTH digits, written out: a nested width is formatted per call


#: Sequence numbers are SQLite integers: a cursor the server takes is at most this.
MAX_CURSOR = 2**63 - 1


def decode_cursor(text: str) -> int:
    """The sequence number of a cursor; ValueError if it is not one."""
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > CURSOR_WIDTH:
        raise ValueError("a cursor is a string of up to 20 digits, as returned by the server")
    return int(text)


#: A filter expression's length bound (checked by the transport).
MAX_FILTER_CHARS = 4096

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True, slots=True)
class Condition:
    path: tuple[str, ...]
    op: str  # "eq" "glob" ">" ">=" "<" "<="
    value: Any
    negate: bool

    def holds(self, event: dict[str, Any]) -> bool:
        found, actual = _lookup(event, self.path)
        result = found and self._compare(actual)
        return not result if self.negate else result

    def _compare(self, actual: Any) -> bool:
        if self.op == "eq":
            return bool(_as_text(actual) == self.value)
        if self.op == "glob":
            return fnmatch.fnmatchcase(_as_text(actual), self.value)
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            try:
                actual = float(actual) if isinstance(actual, str) else None
            except ValueError:
                return False
            if actual is None:
                return False
        if self.op == ">":
            return bool(actual > self.value)
        if self.op == ">=":
            return bool(actual >= self.value)
        if self.op == "<":
            return bool(actual < self.value)
        return bool(actual <= self.value)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _lookup(event: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = event.get("data")
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            break
    else:
        if not isinstance(node, dict | list):
            return True, node
    if len(path) == 1 and path[0] in EVENT_FIELDS and event.get(path[0]) is not None:
        return True, event[path[0]]
    return False, None


@dataclass(frozen=True, slots=True)
class EventFilter:
    """A parsed filter: a conjunction of disjunctions of conditions."""

    text: str
    terms: tuple[tuple[Condition, ...], ...]

    @classmethod
    def parse(cls, text: str | None) -> EventFilter:
        """Parse ``text``; raise :class:`InvalidFilter` naming the position and what was expected."""
        if text is None or not text.strip():
            return MATCH_ALL
        return cls(text, _Parser(text).parse())

    def matches(self, event: dict[str, Any]) -> bool:
        for term in self.terms:
            for cond in term:
                if cond.holds(event):
                    break
            else:
                return False
        return True


MATCH_ALL = EventFilter("", ())


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, expected: str) -> InvalidFilter:
        return InvalidFilter(self.text, self.pos, expected)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def parse(self) -> tuple[tuple[Condition, ...], ...]:
        terms = [self.term()]
        while True:
            self.skip_ws()
            if self.pos == len(self.text):
                return tuple(terms)
            if self.text[self.pos] != ",":
                raise self.fail("',' or '|' or end of filter")
            self.pos += 1
            terms.append(self.term())

    def term(self) -> tuple[Condition, ...]:
        conds = [self.condition()]
        while True:
            self.skip_ws()
            if self.pos < len(self.text) and self.text[self.pos] == "|":
                self.pos += 1
                conds.append(self.condition())
            else:
                return tuple(conds)

    def condition(self) -> Condition:
        self.skip_ws()
        negate = False
        if self.pos < len(self.text) and self.text[self.pos] == "!":
            negate = True
            self.pos += 1
        path = [self.name()]
        while self.pos < len(self.text) and self.text[self.pos] == ".":
            self.pos += 1
            path.append(self.name())
        if self.pos >= len(self.text) or self.text[self.pos] != ":":
            raise self.fail("':' after the field name")
        self.pos += 1
        op, value = self.value()
        return Condition(tuple(path), op, value, negate)

    def name(self) -> str:
        match = _NAME.match(self.text, self.pos)
        if not match:
            raise self.fail("a field name (letters, digits, '_' or '-')")
        self.pos = match.end()
        return match.group()

    def value(self) -> tuple[str, Any]:
        text = self.text
        if self.pos < len(text) and text[self.pos] == '"':
            return "eq", self.quoted()
        for op in (">=", "<=", ">", "<"):
            if text.startswith(op, self.pos):
                self.pos += len(op)
                match = _NUMBER.match(text, self.pos)
                if not match:
                    raise self.fail(f"a number after '{op}'")
                self.pos = match.end()
                return op, float(match.group())
        start = self.pos
        while self.pos < len(text) and text[self.pos] not in ',|"':
            self.pos += 1
        raw = text[start : self.pos].strip()
        if not raw:
            self.pos = start
            raise self.fail("a value after ':'")
        if self.pos < len(text) and text[self.pos] == '"':
            raise self.fail("',' or '|' (quote the whole value)")
        return ("glob" if "*" in raw or "?" in raw else "eq"), raw

    def quoted(self) -> str:
        text = self.text
        self.pos += 1
        out = []
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\\" and self.pos + 1 < len(text):
                out.append(text[self.pos + 1])
                self.pos += 2
            elif ch == '"':
                self.pos += 1
                return "".join(out)
            else:
                out.append(ch)
                self.pos += 1
        raise self.fail('a closing \'"\'')
