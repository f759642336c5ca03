"""The API described for machines: an OpenAPI 3.1 document of the HTTP routes
(``GET /openapi.json``) and an AsyncAPI 3.0 document of the WebSocket frames and ops
(``GET /asyncapi.json``).

Both are generated, never written by hand: the operations come from the operation table
(``ops.OPS``), the methods, paths, path arguments and success statuses from the route table
(``routes._ROUTES``), and every bound from the constants the argument readers check
(``args.py``, ``records.py``, the context engine's, the server's configured limits). A route
or op added to a table appears in the documents; one without an argument description here
fails ``tests/transport/test_openapi.py``. Pure: dicts in, dicts out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..actors.agents import MAX_TAIL_LINES, STATES
from ..actors.context.engine import MAX_BYTES, MIN_BYTES
from ..actors.events import MAX_FILTER_CHARS
from ..actors.idempotency import MAX_KEY_LENGTH
from ..actors.records import MAX_ID_CHARS, MAX_REFERENCES, MAX_ROUND, MAX_TTL_SECONDS
from .args import (
    MAX_BATCH_RESULTS,
    MAX_ENV_VALUE_CHARS,
    MAX_ENV_VARS,
    MAX_Q_CHARS,
    MAX_SUBSCRIBE_LIST,
    MAX_TASK_CHARS,
    MAX_TOKEN_CHARS,
)
from .ops import MAX_STOP_GRACE, OPS
from .routes import _BODY_OPTIONAL, _ROUTES

__all__ = ["ARGS", "DocLimits", "asyncapi", "openapi"]

Schema = dict[str, Any]


@dataclass(frozen=True)
class DocLimits:
    """The configured limits a document states (they differ between servers)."""

    version: str
    wait_max_ms: int = 300_000
    max_body_bytes: int = 10 * 1024 * 1024


# -- the value types --

#: An id: 1 to 256 characters, no control character (C0, DEL, C1), not only whitespace.
ID: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS,
              "pattern": r"^(?!\s*$)[^\x00-\x1f\x7f-\x9f]+$"}
EVENT_TYPE: Schema = {"type": "string", "pattern": r"^[A-Za-z0-9_.:\-]{1,128}$"}


def _text(max_chars: int) -> Schema:
    """Free text: tabs and line breaks allowed, no other control character."""
    return {"type": "string", "maxLength": max_chars, "pattern": r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"}


def _int(lo: int, hi: int) -> Schema:
    return {"type": "integer", "minimum": lo, "maximum": hi}


CURSOR: Schema = {"type": "string", "pattern": r"^[0-9]{1,20}$",
                  "description": "an event cursor this server returned"}
PAGE_CURSOR: Schema = {"type": "string", "maxLength": 64, "description": "a next_cursor this server returned"}
TIME: Schema = {"type": "string", "format": "date-time", "maxLength": 64}
NULLABLE_ID: Schema = {"oneOf": [ID, {"type": "null"}]}


def _obj(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


RESULT_BODY = _obj({
    "agent_id": ID, "agent_type": ID, "issue_id": ID, "project_id": ID,
    "result": _obj({"status": ID}, ("status",)),
    "timestamp": {"type": "string", "maxLength": 64},
}, ("agent_id", "agent_type", "issue_id", "result"))


# -- the arguments of each op: where an HTTP request carries them is decided per route --


@dataclass(frozen=True)
class Arg:
    schema: Schema
    required: bool = False


def _project() -> dict[str, Arg]:
    return {"project_id": Arg(ID)}


def args_table(limits: DocLimits) -> dict[str, dict[str, Arg]]:
    """Every op's arguments with the bounds its reader checks (``ops.py``)."""
    event_body = {
        "topic": Arg(NULLABLE_ID), "data": Arg({"type": ["object", "null"]}),
        "correlation_id": Arg(NULLABLE_ID),
        "ttl_seconds": Arg({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TTL_SECONDS}),
        "round": Arg({"oneOf": [_int(-MAX_ROUND, MAX_ROUND), {"type": "null"}]}),
        "references": Arg({"oneOf": [{"type": "array", "maxItems": MAX_REFERENCES, "items": ID},
                                     {"type": "null"}]}),
    }
    return {
        "ping": {},
        "status": {},
        "result.store": {name: Arg(schema, name in RESULT_BODY["required"])
                         for name, schema in RESULT_BODY["properties"].items()},
        "result.store_batch": {"results": Arg(
            {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_RESULTS, "items": RESULT_BODY}, True)},
        "result.get": {"result_id": Arg(ID, True), **_project()},
        "result.query": {
            "issue_id": Arg(ID), "agent_type": Arg(ID), "agent_id": Arg(ID), "status": Arg(ID),
            "since": Arg(TIME), "until": Arg(TIME), "q": Arg(_text(MAX_Q_CHARS)),
            "limit": Arg(_int(1, 1000)), "cursor": Arg(PAGE_CURSOR), **_project(),
        },
        "event.publish": {"event_type": Arg(EVENT_TYPE, True), **event_body, **_project()},
        "event.wait": {
            "event_type": Arg(EVENT_TYPE, True), "timeout": Arg(_int(0, limits.wait_max_ms)),
            "filter": Arg(_text(MAX_FILTER_CHARS)), "since": Arg(CURSOR), "limit": Arg(_int(1, 1000)),
            **_project(),
        },
        "event.subscribe": {
            "event_types": Arg({"oneOf": [
                {"type": "array", "minItems": 1, "maxItems": MAX_SUBSCRIBE_LIST, "items": EVENT_TYPE},
                {"const": "*"}]}),
            "topics": Arg({"type": "array", "maxItems": MAX_SUBSCRIBE_LIST, "items": ID}),
            "filter": Arg(_text(MAX_FILTER_CHARS)),
            "since": Arg({"oneOf": [CURSOR, {"type": "object", "additionalProperties": CURSOR}]}),
            **_project(),
        },
        "event.unsubscribe": {"subscription": Arg(ID, True)},
        "context.get": {
            "issue_id": Arg(ID, True), "agent_type": Arg(ID), "task": Arg(_text(MAX_TASK_CHARS)),
            "max_bytes": Arg(_int(MIN_BYTES, MAX_BYTES)), **_project(),
        },
        "cache.clear": {"issue_id": Arg(ID, True), **_project()},
        "agent.spawn": {
            "agent_type": Arg(ID, True), "issue_id": Arg(ID, True), "task": Arg(_text(MAX_TASK_CHARS)),
            "context_requirements": Arg(_obj({"max_bytes": _int(MIN_BYTES, MAX_BYTES)})),
            "environment": Arg({
                "type": "object", "maxProperties": MAX_ENV_VARS,
                "propertyNames": {"pattern": r"^(?![Oo][Rr][Cc][Hh][Ee][Ss][Tt][Rr][Aa]_)[A-Za-z_][A-Za-z0-9_]{0,255}$"},
                "additionalProperties": {"type": "string", "maxLength": MAX_ENV_VALUE_CHARS,
                                         "pattern": "^[^\\x00]*$"},
            }),
            **_project(),
        },
        "agent.status": {"agent_id": Arg(ID, True), **_project()},
        "agent.list": {"state": Arg({"enum": list(STATES)}), "agent_type": Arg(ID), "issue_id": Arg(ID),
                       **_project()},
        "agent.logs": {"agent_id": Arg(ID, True), "tail": Arg(_int(0, MAX_TAIL_LINES)), **_project()},
        "agent.stop": {"agent_id": Arg(ID, True),
                       "grace_seconds": Arg({"type": "number", "minimum": 0, "maximum": MAX_STOP_GRACE}),
                       **_project()},
        "auth.refresh": {"token": Arg({"type": "string", "maxLength": MAX_TOKEN_CHARS})},
        "admin.faults": {
            "target": Arg(ID, True), "kind": Arg({"enum": ["crash", "delay"]}, True),
            "ms": Arg({"type": "number", "minimum": 0, "maximum": 600_000}),
        },
    }


#: The ops' arguments with the default limits (for tests and readers; documents use theirs).
ARGS = args_table(DocLimits(version="-"))


# -- the answers --

ERROR: Schema = {
    "type": "object",
    "description": "The error object of every refusal, on HTTP and WebSocket alike",
    "properties": {
        "error": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"},
        "timestamp": {"type": "string"}, "request_id": {"type": ["string", "null"]},
        "field": {"type": "string"}, "retry_after_seconds": {"type": "number", "exclusiveMinimum": 0},
        "limit": {"type": "number"},
    },
    "required": ["error", "code", "message", "timestamp", "request_id"],
}
RECORD = _obj({**RESULT_BODY["properties"], "id": ID, "project_id": ID, "stored_at": {"type": "string"},
               "storage_path": {"type": "string"}},
              ("id", "project_id", "agent_id", "agent_type", "issue_id", "result", "stored_at"))
EVENT = _obj({
    "event_id": {"type": "string"}, "cursor": {"type": "string"}, "project_id": {"type": "string"},
    "event_type": {"type": "string"}, "topic": {"type": ["string", "null"]},
    "publisher": {"type": "string"}, "agent_type": {"type": ["string", "null"]}, "data": {"type": "object"},
    "correlation_id": {"type": ["string", "null"]}, "round": {"type": ["integer", "null"]},
    "references": {"type": "array", "items": {"type": "string"}}, "timestamp": {"type": "string"},
    "expires_at": {"type": "string"}, "traceparent": {"type": "string"},
}, ("event_id", "cursor", "project_id", "event_type", "publisher", "data", "timestamp", "expires_at"))
AGENT = _obj({
    "agent_id": {"type": "string"}, "agent_type": {"type": "string"}, "issue_id": {"type": "string"},
    "state": {"enum": list(STATES)}, "pid": {"type": ["integer", "null"]},
    "exit_code": {"type": ["integer", "null"]}, "restarts": {"type": "integer"},
    "log_path": {"type": ["string", "null"]},
}, ("agent_id", "agent_type", "issue_id", "state"))
STORED = _obj({"id": {"type": "string"}, "stored": {"const": True}, "storage_path": {"type": "string"},
               "next_agents": {"type": "array"}, "event_published": {"type": "boolean"}},
              ("id", "stored", "next_agents", "event_published"))
CONTEXT = _obj({
    "issue_id": {"type": "string"}, "agent_type": {"type": "string"},
    "context": _obj({"project_structure": {"type": "object"}, "relevant_files": {"type": "array"},
                     "git_context": {"type": "object"}, "previous_agent_outputs": {"type": "array"},
                     "metadata": {"type": "object"}}),
    "truncated": {"type": "boolean"}, "total_size_bytes": {"type": "integer"},
    "file_count": {"type": "integer"}, "cache_hit": {"type": "boolean"}, "timestamp": {"type": "string"},
}, ("issue_id", "agent_type", "context", "truncated", "cache_hit"))

#: What a success of each op answers.
REPLIES: dict[str, Schema] = {
    "ping": _obj({"pong": {"const": True}}, ("pong",)),
    "status": {"$ref": "#/components/schemas/Status"},
    "result.store": STORED,
    "result.store_batch": _obj({"results": {"type": "array", "items": STORED}, "stored": {"type": "integer"}},
                               ("results", "stored")),
    "result.get": RECORD,
    "result.query": _obj({"results": {"type": "array", "items": RECORD},
                          "next_cursor": {"type": ["string", "null"]}}, ("results", "next_cursor")),
    "event.publish": _obj({"event_id": {"type": "string"}, "cursor": {"type": "string"},
                           "published": {"const": True}, "subscribers_notified": {"type": "array"},
                           "timestamp": {"type": "string"}}, ("event_id", "cursor", "published")),
    "event.wait": _obj({"events": {"type": "array", "items": EVENT}, "more_available": {"type": "boolean"},
                        "next_cursor": {"type": ["string", "null"]}, "timeout": {"type": "boolean"}},
                       ("events", "more_available")),
    "event.subscribe": _obj({"subscription": {"type": "string"}, "cursor": {"type": ["string", "null"]}},
                            ("subscription",)),
    "event.unsubscribe": {"type": "object"},
    "context.get": CONTEXT,
    "cache.clear": _obj({"cleared": {"const": True}, "entries_removed": {"type": "integer"}},
                        ("cleared", "entries_removed")),
    "agent.spawn": _obj({"agent_id": {"type": "string"}, "spawned": {"type": "boolean"},
                         "process_id": {"type": ["integer", "null"]}, "context_injected": {"type": "boolean"},
                         "jwt_token": {"type": ["string", "null"]}, "webhook_url": {"type": ["string", "null"]}},
                        ("agent_id", "spawned")),
    "agent.status": AGENT,
    "agent.list": _obj({"agents": {"type": "array", "items": AGENT}}, ("agents",)),
    "agent.logs": _obj({"agent_id": {"type": "string"}, "lines": {"type": "array", "items": {"type": "string"}},
                        "log_path": {"type": ["string", "null"]}}, ("agent_id", "lines")),
    "agent.stop": AGENT,
    "auth.refresh": _obj({"token": {"type": "string"}, "expires_at": {"type": "number"}},
                         ("token", "expires_at")),
    "admin.faults": _obj({"target": {"type": "string"}, "kind": {"type": "string"}, "injected": {"const": True}},
                         ("target", "kind", "injected")),
}

HEALTH = _obj({
    "status": {"enum": ["healthy", "degraded"]}, "service": {"type": "string"}, "version": {"type": "string"},
    "uptime_seconds": {"type": "number"}, "checks": {"type": "object"},
    "reasons": {"type": "array", "items": {"type": "string"}},
}, ("status", "service", "version", "uptime_seconds", "checks"))
STATUS = _obj({"agents": {"type": "object"}, "storage": {"type": "object"}, "events": {"type": "object"},
               "performance": {"type": "object"}, "actors": {"type": "object"}},
              ("agents", "storage", "events", "performance", "actors"))

#: The refusals every operation may answer (each with the error object).
_REFUSALS = {
    "400": "invalid request (REQ_001), event (EVT_002) or filter (EVT_003)",
    "401": "missing or invalid token (AUTH_001), expired token (AUTH_002)",
    "403": "permission missing, or another project named (AUTH_003)",
    "404": "unknown id, or another project's (NOT_FOUND)",
    "409": "agent type not spawnable (AGENT_001), idempotency key reused (IDEM_001), conflict",
    "413": "body over the limit (REQ_002), context over its limit (CTX_002)",
    "414": "request target too long",
    "429": "rate limit (RATE_001) or a bound (LIMIT_001, AGENT_002)",
    "503": "overloaded, shutting down, or restarting (UNAVAILABLE)",
}
#: Headers every request may carry (docs/observability.md); invalid ones are ignored.
_TRACING_HEADERS = [
    {"name": "X-Request-ID", "in": "header", "required": False,
     "description": "the request's id, if 1 to 256 visible ASCII characters (else the server makes one)",
     "schema": {"type": "string"}},
    {"name": "traceparent", "in": "header", "required": False,
     "description": "W3C Trace Context; kept in the logs and in published events",
     "schema": {"type": "string"}},
]
_REQUEST_ID_HEADER = {"schema": {"type": "string"}, "description": "the request's id (also in every log line)"}


def _openapi_path(pattern: str, names: tuple[str, ...]) -> str:
    path = pattern
    for name in names:
        path = path.replace("([^/]+)", "{" + name + "}", 1)
    return path


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "headers": {"X-Request-ID": _REQUEST_ID_HEADER},
            "content": {"application/json": {"schema": schema}}}


def openapi(limits: DocLimits) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every HTTP route this server serves."""
    table = args_table(limits)
    paths: dict[str, dict[str, Any]] = {}
    errors = {status: {"$ref": f"#/components/responses/E{status}"} for status in _REFUSALS}
    for method, pattern, op, names, status in _ROUTES:
        args = table[op]
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": args[name].schema} for name in names
        ]
        rest = {name: arg for name, arg in args.items() if name not in names}
        operation: dict[str, Any] = {
            "operationId": op, "summary": f"the {op} operation (also a WebSocket op)" if OPS[op].ws else op,
            "security": [{"bearer": []}],
        }
        if method == "POST":
            body = {"type": "object", "properties": {n: a.schema for n, a in rest.items()}}
            required = [n for n, a in rest.items() if a.required]
            if required:
                body["required"] = required
            operation["requestBody"] = {"required": op not in _BODY_OPTIONAL,
                                        "content": {"application/json": {"schema": body}}}
            params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "schema": {"type": "string", "maxLength": MAX_KEY_LENGTH,
                                      # visible ASCII, inner spaces: what any HTTP stack keeps as sent
                                      "pattern": r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$"}})
        else:
            params += [{"name": n, "in": "query", "required": a.required, "schema": a.schema}
                       for n, a in rest.items()]
        operation["parameters"] = [*params, *_TRACING_HEADERS]
        operation["responses"] = {str(status): _json(_ref(_component(op)), "success"), **errors}
        paths.setdefault(_openapi_path(pattern.pattern, names), {})[method.lower()] = operation
    public = {
        "/health": ("health", _ref("Health"), {"503": _json(_ref("Health"), "degraded (the body says why)")}),
        "/status": ("status", _ref("Status"), {}),
        "/metrics": ("metrics", None, {}),
        "/openapi.json": ("openapi", None, {}),
        "/asyncapi.json": ("asyncapi", None, {}),
    }
    for path, (name, schema, more) in public.items():
        if schema is None:
            kind = "text/plain" if name == "metrics" else "application/json"
            ok: dict[str, Any] = {"description": name, "content": {kind: {"schema": {
                "type": "string" if kind == "text/plain" else "object"}}}}
        else:
            ok = _json(schema, name)
        paths[path] = {"get": {"operationId": name, "security": [], "responses": {"200": ok, **more}}}
    schemas: dict[str, Schema] = {
        "Error": ERROR, "Health": HEALTH, "Status": STATUS, "ResultBody": RESULT_BODY,
        "Record": RECORD, "Event": EVENT, "Agent": AGENT,
        **{_component(op): REPLIES[op] for op in OPS if op != "status"},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Orchestra", "version": limits.version,
                 "description": "Orchestration sidecar for fleets of AI coding agents (docs/protocol.md)"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {f"E{status}": _json(_ref("Error"), text) for status, text in _REFUSALS.items()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _component(op: str) -> str:
    """The name of an op's reply schema: ``result.store`` -> ``ResultStoreReply``."""
    if op == "status":
        return "Status"
    return "".join(part.capitalize() for part in re.split(r"[._]", op)) + "Reply"


def asyncapi(limits: DocLimits) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``GET /ws``: one request message per op (its arguments
    from the same table as HTTP's), the reply, the error reply and the pushed event."""
    table = args_table(limits)
    rid = {"description": "echoed in the reply", "type": ["string", "number", "boolean", "null"],
           "maxLength": MAX_ID_CHARS}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for name, op in OPS.items():
        if not op.ws:
            continue
        args = table[name]
        key = _component(name).removesuffix("Reply")
        messages[f"{key}Request"] = {"name": name, "payload": {
            "type": "object",
            "properties": {"id": rid, "op": {"const": name}, "idempotency_key": {"type": "string"},
                           "traceparent": {"type": "string"},
                           **{n: a.schema for n, a in args.items()}},
            "required": ["op", *[n for n, a in args.items() if a.required]],
        }}
        messages[f"{key}Reply"] = {"name": f"{name} reply", "payload": {
            "type": "object", "required": ["id", "ok", "result"],
            "properties": {"id": rid, "ok": {"const": True}, "result": _ref(_component(name))},
        }}
        operations[name] = {
            "action": "receive", "channel": {"$ref": "#/channels/ws"},
            "messages": [{"$ref": f"#/channels/ws/messages/{key}Request"}],
            "reply": {"channel": {"$ref": "#/channels/ws"},
                      "messages": [{"$ref": f"#/channels/ws/messages/{key}Reply"},
                                   {"$ref": "#/channels/ws/messages/ErrorReply"}]},
        }
    messages["Auth"] = {"name": "auth", "payload": _obj(
        {"id": rid, "op": {"const": "auth"}, "token": {"type": "string"}}, ("op", "token"))}
    messages["ErrorReply"] = {"name": "error reply", "payload": _obj(
        {"id": rid, "ok": {"const": False}, "error": _ref("Error")}, ("id", "ok", "error"))}
    messages["EventPush"] = {"name": "event", "payload": _obj(
        {"op": {"const": "event"}, "subscription": {"type": "string"}, "event": _ref("Event")},
        ("op", "subscription", "event"))}
    operations["auth"] = {"action": "receive", "channel": {"$ref": "#/channels/ws"},
                          "messages": [{"$ref": "#/channels/ws/messages/Auth"}]}
    operations["event"] = {"action": "send", "channel": {"$ref": "#/channels/ws"},
                           "messages": [{"$ref": "#/channels/ws/messages/EventPush"}]}
    schemas = {"Error": ERROR, "Event": EVENT, "Status": STATUS,
               **{_component(op): REPLIES[op] for op in OPS if OPS[op].ws and op != "status"}}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Orchestra WebSocket", "version": limits.version,
                 "description": "JSON text frames on GET /ws (docs/protocol.md). Close codes: 4001 "
                                "authentication, 4003 forbidden, 4008 too far behind, 1009 frame too "
                                f"large (over {limits.max_body_bytes} bytes), 1001 going away, 1011 "
                                "crashed, 1012 restarted."},
        "channels": {"ws": {"address": "/ws", "messages": messages}},
        "operations": operations,
        "components": {"schemas": schemas},
    }
