"""One definition of what a request may carry (issue 15, "A schema for the API").

Each operation's arguments are a :class:`msgspec.Struct` whose annotations state every rule:
types, required or optional, and the bounds as :class:`msgspec.Meta` constraints (lengths,
patterns, numeric ranges, list and object sizes). From that one definition come both

- the validation at the edge: :func:`read` converts a request's dict into the Struct
  (``msgspec.convert``) and turns a refusal into the PROTOCOL error object's exception, naming
  the field (in one place: :func:`refusal`); and
- the JSON Schemas of the API documents (``msgspec.json.schema_components``, used by
  ``transport/openapi.py``): a bound changed in a Meta moves both.

A rule's ``description`` is the sentence an error message ends with ("'limit' must be an
integer from 1 to 1000"), so the message, the document and the check say the same. A Meta's
``extra`` carries what the error object needs beyond that (never part of a schema):
``error``, the exception class (:class:`InvalidEvent` for an event's fields, else
:class:`InvalidRequest`); ``above``, the error for a number over the bound when that is not a
400 (a 413 ``max_bytes``).

Arguments come from the path, query and body on HTTP (query values are strings) and from the
frame on WebSocket: conversion is lax (``strict=False``), so ``"10"`` is an integer 10 and
``1024.0`` is 1024, as JSON Schema's "integer" allows; an empty string stands for an absent
argument where :attr:`Args.empty_absent` says so (a query's ``?limit=`` is no limit).

Rules a Struct cannot state whole stay small post-checks, each said in the schema too: the
nesting depth of a body (``records.validate_depth``, before any op), a cursor's largest value,
a time the calendar must check, a filter's grammar, and bounds the server's configuration sets
(``event.wait``'s longest ``timeout``, filled into the documents from the same setting).
Pure: no I/O.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, TypeVar, Union, get_args, get_origin

import msgspec
from msgspec import Meta, Struct

from .errors import InvalidEvent, InvalidRequest

__all__ = [
    "END",
    "EVENT_TYPE_PATTERN",
    "ID_PATTERN",
    "ID_RULE",
    "MAX_ID_CHARS",
    "TEXT_PATTERN",
    "Args",
    "EventSide",
    "EventType",
    "Id",
    "integer",
    "read",
    "refusal",
    "text",
]

#: An id (issue, agent, agent type, result, project, subscription, correlation) or a topic.
MAX_ID_CHARS = 256
#: The end of the text, in a pattern both JSON Schema (ECMA-262) and Python read alike: Python's
#: ``$`` also matches before a final line break, so ``"a\n"`` would pass ``^[^\n]+$`` there.
END = r"(?![\s\S])"
#: An id: 1 to 256 characters, no control character (C0 with NUL, DEL, C1), not only whitespace.
ID_PATTERN = r"^(?!\s*$)[^\x00-\x1f\x7f-\x9f]+" + END
ID_RULE = (f"a string of 1 to {MAX_ID_CHARS} characters, without control characters and not only "
           "whitespace")
#: Free text may hold tabs and line breaks, never another control character (its own class
#: holds a final line break, so ``$`` is exact here).
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
EVENT_TYPE_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}" + END

Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN, description=ID_RULE)]
#: Refused as an event (EVT_002), wherever it appears.
EventType = Annotated[str, Meta(
    pattern=EVENT_TYPE_PATTERN,
    description="1-128 characters of letters, digits, '_', '.', ':' or '-'",
    extra={"error": InvalidEvent},
)]
#: Marks a field of an event's body: its refusal is an invalid event (EVT_002).
EventSide = Meta(extra={"error": InvalidEvent})


def text(max_chars: int) -> Meta:
    """Free text of at most ``max_chars`` characters (tabs and line breaks allowed), for
    ``Annotated[str, text(n)]``."""
    return Meta(max_length=max_chars, pattern=TEXT_PATTERN,
                description=f"a string of at most {max_chars} characters without control characters")


def integer(lo: int, hi: int | None = None, *, above: Callable[[int], Exception] | None = None) -> Meta:
    """An integer from ``lo`` to ``hi``, for ``Annotated[int, integer(lo, hi)]``; ``above``
    makes the error for one over ``hi`` (when that is not a 400)."""
    if hi is None:
        return Meta(ge=lo, description=f"an integer of at least {lo}")
    extra = {"above": above, "max": hi} if above is not None else None
    return Meta(ge=lo, le=hi, description=f"an integer from {lo} to {hi}", extra=extra)


class Args(Struct, kw_only=True):
    """The arguments of an operation (a subclass per op, or a body)."""

    #: The fields whose empty string means absent; None: every field (the arguments a query
    #: may carry). A body's fields (a result, an event) refuse an empty id instead.
    empty_absent: ClassVar[frozenset[str] | None] = None
    #: The error for a body that is not an object at all (its fields say their own).
    refused_as: ClassVar[type[InvalidRequest] | type[InvalidEvent]] = InvalidRequest


A = TypeVar("A", bound=Args)


def read(kind: type[A], args: Any) -> A:
    """``args`` (a request's dict) as ``kind``; else the refusal naming the bad field."""
    empty = kind.empty_absent
    if empty is None:
        if type(args) is dict and "" in args.values():
            args = {k: v for k, v in args.items() if v != ""}
    elif empty and type(args) is dict:
        for name in empty:
            if args.get(name) == "":
                args = {k: v for k, v in args.items() if k != name}
    try:
        return msgspec.convert(args, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise refusal(kind, args, str(exc)) from None


# -- from msgspec's refusal to the error object: the one place --

_MISSING = re.compile(r"Object missing required field `(.+)`")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
_SOMEWHERE = object()  # a key of a dict msgspec does not name: "[...]"


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(kind, include_extras=True)
    except Exception:  # a struct whose annotations cannot be resolved: no rule, msgspec's words
        return {}


def _path(where: str) -> list[Any]:
    """``$.results[3].result.status`` -> ``["results", 3, "result", "status"]``."""
    out: list[Any] = []
    for name, index in ((m.group(1), m.group(2)) for m in _STEP.finditer(where.removeprefix("$"))):
        out.append(name if name is not None else int(index) if index is not None else _SOMEWHERE)
    return out


class _Rule:
    """What the annotations on a field's path say: its words and its error class."""

    def __init__(self) -> None:
        self.description: str | None = None
        self.error: type[InvalidRequest] | type[InvalidEvent] = InvalidRequest
        self.above: Callable[[int], Exception] | None = None
        self.max: int | None = None
        self.key_description: str | None = None
        self.raw: Any = None

    def take(self, tp: Any) -> Any:
        """Note the Metas of ``tp`` (outer to inner, inner wins); its type without them."""
        while get_origin(tp) is Annotated:
            tp, *metas = get_args(tp)
            for meta in metas:
                if not isinstance(meta, Meta):
                    continue
                if meta.description is not None:
                    self.description = meta.description
                extra = meta.extra or {}
                if "error" in extra:
                    self.error = extra["error"]
                if "above" in extra:
                    self.above, self.max = extra["above"], extra["max"]
        return tp


_UNIONS = (Union, types.UnionType)


def _members(tp: Any) -> tuple[Any, ...]:
    return get_args(tp) if get_origin(tp) in _UNIONS else (tp,)


def _bare(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _fits(tp: Any, step: Any) -> bool:
    """Whether ``step`` (a name, an index, a dict's key) can go into ``tp``."""
    bare = _bare(tp)
    origin = get_origin(bare)
    if origin in _UNIONS:
        return any(_fits(member, step) for member in get_args(bare))
    if isinstance(step, int):
        return origin in (list, tuple)
    if step is _SOMEWHERE:
        return origin is dict
    return origin is dict or (isinstance(bare, type) and issubclass(bare, Struct))


def _into(tp: Any, step: Any, rule: _Rule) -> Any:
    """The container of ``tp`` (through its Metas, noted in ``rule``, and unions) that ``step``
    goes into; None if none."""
    tp = rule.take(tp)
    if get_origin(tp) in _UNIONS:
        member = next((m for m in get_args(tp) if _fits(m, step)), None)
        return None if member is None else _into(member, step, rule)
    return tp if _fits(tp, step) else None


def _resolve(kind: type, parts: list[Any], raw: Any, key_error: bool) -> tuple[list[Any], _Rule]:
    """The rule of the field at ``parts`` in ``kind``; a dict key msgspec did not name is found
    in ``raw`` (the first whose value the value type refuses)."""
    rule = _Rule()
    tp: Any = kind
    done: list[Any] = []
    for step in parts:
        rule.description = None
        container = _into(tp, step, rule)
        if container is None:
            return [*done, step], rule
        if isinstance(step, str) and get_origin(container) is not dict:  # a Struct's field
            tp = _hints(container).get(step)
            raw = raw.get(step) if isinstance(raw, dict) else None
        elif isinstance(step, int):
            tp = get_args(container)[0]
            raw = raw[step] if isinstance(raw, list) and step < len(raw) else None
        else:  # a dict's value
            value_type = get_args(container)[1]
            if step is _SOMEWHERE:
                step = next((k for k, v in (raw.items() if isinstance(raw, dict) else ())
                             if not _accepts(value_type, v)), "?")
            tp = value_type
            raw = raw.get(step) if isinstance(raw, dict) else None
        done.append(step)
        if tp is None:
            return done, rule
    rule.description = None
    if key_error:
        container = _into(tp, _SOMEWHERE, rule)
        if container is not None:
            key = _Rule()
            key.take(get_args(container)[0])
            rule.key_description = key.description
        return done, rule
    tp = rule.take(tp)
    if rule.description is None:  # an optional field: the words are its value's
        for member in _members(tp):
            if member is not type(None):
                words = _Rule()
                words.take(member)
                if words.description is not None:
                    rule.description = words.description
                    if words.error is not InvalidRequest:
                        rule.error = words.error
                    if words.above is not None:
                        rule.above, rule.max = words.above, words.max
                    break
    rule.raw = raw
    return done, rule


def _accepts(tp: Any, value: Any) -> bool:
    try:
        msgspec.convert(value, tp, strict=False)
    except (msgspec.ValidationError, TypeError):
        return False
    return True


def _name(parts: list[Any]) -> str:
    out = ""
    for step in parts:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += ("." if out else "") + str(step)[:64]
    return out


def refusal(kind: type, args: Any, message: str) -> Exception:
    """The exception for msgspec's refusal ``message`` of ``args`` as ``kind``: the field its
    path names (``results[2].result.status``, ``environment.A``), the rule's words, the error
    class the annotations give (InvalidRequest unless one says otherwise)."""
    what, at, where = message.partition(" - at `")
    key_error = where.startswith("key` in `")
    parts = _path(where.removeprefix("key` in `").rstrip("`")) if at else []
    missing = _MISSING.fullmatch(what)
    if missing is not None:
        parts.append(missing.group(1))
    parts, rule = _resolve(kind, parts, args, key_error)
    field = _name(parts) or "body"
    if not parts:
        error = getattr(kind, "refused_as", InvalidRequest)
        return error(field, f"the {'event' if error is InvalidEvent else 'request'} body must be a JSON object")
    raw = rule.raw
    if rule.above is not None and rule.max is not None and not missing:
        try:
            number = msgspec.convert(raw, int, strict=False)
        except msgspec.ValidationError:
            number = None
        if number is not None and number > rule.max:
            return rule.above(number)
    if missing is not None:
        return rule.error(field, f"missing field '{field}' ({rule.description or 'required'})")
    if key_error:
        return rule.error(field, f"the names in '{field}' must be {rule.key_description or 'valid'}")
    if rule.description is not None:
        return rule.error(field, f"'{field}' must be {rule.description}")
    return rule.error(field, f"'{field}': {what}")
