"""The HTTP routes: which operation a method and path name, and the arguments a request
carries (path segments, query, JSON body). Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from ..actors.records import validate_depth, validate_id
from .errors import ApiError

__all__ = ["Route", "find_route", "route_args"]

#: (method, path pattern, operation, names of the pattern's groups, status of a success)
_ROUTES: list[tuple[str, re.Pattern[str], str, tuple[str, ...], int]] = [
    (m, re.compile(p), op, names, status)
    for m, p, op, names, status in [
        ("POST", r"/api/results", "result.store", (), 200),
        ("POST", r"/api/results/batch", "result.store_batch", (), 200),
        ("GET", r"/api/results", "result.query", (), 200),
        ("GET", r"/api/results/([^/]+)", "result.get", ("result_id",), 200),
        ("POST", r"/api/events/([^/]+)", "event.publish", ("event_type",), 200),
        ("GET", r"/api/events/wait/([^/]+)", "event.wait", ("event_type",), 200),
        ("GET", r"/api/context/([^/]+)/([^/]+)", "context.get", ("issue_id", "agent_type"), 200),
        ("DELETE", r"/api/cache/context/([^/]+)", "cache.clear", ("issue_id",), 200),
        ("POST", r"/api/agents/spawn", "agent.spawn", (), 201),
        ("GET", r"/api/agents/([^/]+)/status", "agent.status", ("agent_id",), 200),
        ("POST", r"/api/admin/faults", "admin.faults", (), 200),
    ]
]
#: operations a POST may send without a body
_BODY_OPTIONAL = frozenset({"admin.faults"})


def _prefix(path: str) -> str:
    """The first two segments of a path: '/api/results/x' -> 'api/results'."""
    return "/".join(path.split("/", 3)[1:3])


# Routes grouped by that prefix, so a request tries only its own family of patterns.
_ROUTES_BY_PREFIX: dict[str, list[tuple[str, re.Pattern[str], str, tuple[str, ...], int]]] = {}
for _route in _ROUTES:
    _ROUTES_BY_PREFIX.setdefault(_prefix(_route[1].pattern.split("(", 1)[0]), []).append(_route)
del _route


@dataclass(frozen=True, slots=True)
class Route:
    """A matched route: the operation, its path arguments (still %-encoded) and the status
    of a success."""

    op: str
    path_args: tuple[tuple[str, str], ...]
    status: int


def find_route(method: str, path: str) -> Route | list[str]:
    """The route of ``method`` on ``path``; else the methods allowed there (empty: none)."""
    allowed: list[str] = []
    for route_method, pattern, op, names, status in _ROUTES_BY_PREFIX.get(_prefix(path), ()):
        match = pattern.fullmatch(path)
        if match is None:
            continue
        if route_method != method:
            allowed.append(route_method)
            continue
        return Route(op, tuple(zip(names, match.groups(), strict=True)), status)
    return allowed


def route_args(route: Route, method: str, body: bytes, query: str, max_json_depth: int) -> dict[str, Any]:
    """The arguments of a request: path segments over the body's fields over the query's.

    Raises :class:`ApiError` (malformed or missing body) or
    :class:`~orchestra.actors.errors.InvalidRequest` (too deep, a path segment not an id).
    """
    args: dict[str, Any] = {}
    if body:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "REQ_001", f"malformed JSON body: {exc}", field="body") from None
        if not isinstance(parsed, dict):
            raise ApiError(400, "REQ_001", "the body must be a JSON object", field="body")
        validate_depth(body, parsed, max_json_depth)
        args.update(parsed)
    elif method == "POST" and route.op not in _BODY_OPTIONAL:
        raise ApiError(400, "REQ_001", "missing JSON body", field="body")
    if query:
        for key, value in parse_qsl(query, keep_blank_values=True):
            args.setdefault(key, value)
    for name, value in route.path_args:
        # a path segment is an id (event_type has its own, narrower rule)
        args[name] = unquote(value) if name == "event_type" else validate_id(name, unquote(value))
    return args
