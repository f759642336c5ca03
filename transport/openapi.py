"""The API described for machines: an OpenAPI 3.1 document of the HTTP routes
(``GET /openapi.json``) and an AsyncAPI 3.0 document of the WebSocket frames and ops
(``GET /asyncapi.json``).

Both are generated, never written by hand: the operations come from the operation table
(``ops.OPS``), the methods, paths, path arguments and success statuses from the route table
(``routes._ROUTES``), and every argument's type, requiredness and bound from the op's Struct
(``schema.OP_ARGS``) through ``msgspec.json.schema_components``: the same Structs the
handlers read their arguments with (``actors/schema.py``), so the documents and the
validation are one definition. Only the bounds a server's configuration sets (the longest
``event.wait``) are filled in here, from the setting the op checks. An op without a Struct
fails ``tests/transport/test_openapi.py``. Pure: dicts in, dicts out.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from ..actors.agents import STATES
from ..actors.idempotency import MAX_KEY_LENGTH
from ..actors.records import MAX_ID_CHARS, MAX_JSON_DEPTH
from .ops import OPS
from .routes import _BODY_OPTIONAL, _ROUTES
from .schema import OP_ARGS

__all__ = ["ARGS", "DocLimits", "args_table", "asyncapi", "openapi", "struct_schemas"]

Schema = dict[str, Any]


@dataclass(frozen=True)
class DocLimits:
    """The configured limits a document states (they differ between servers)."""

    version: str
    wait_max_ms: int = 300_000
    max_body_bytes: int = 10 * 1024 * 1024
    max_json_depth: int = MAX_JSON_DEPTH


def _obj(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


# -- the arguments of each op: where an HTTP request carries them is decided per route --

_REF = "#/components/schemas/{name}"


def struct_schemas(kinds: list[type[msgspec.Struct]]) -> tuple[list[Schema], dict[str, Schema]]:
    """The JSON Schema of each Struct of ``kinds`` and the named ones they refer to (a nested
    Struct, like a batch's ``ResultBody``), as ``components/schemas``."""
    return msgspec.json.schema_components(kinds, ref_template=_REF)  # type: ignore[return-value]


@functools.cache
def _op_schemas() -> tuple[dict[str, Schema], dict[str, Schema]]:
    """Each op's argument schema (an object) and every named schema those refer to."""
    kinds = list(dict.fromkeys(OP_ARGS.values()))
    _, components = struct_schemas(kinds)
    ops = {op: components[kind.__name__] for op, kind in OP_ARGS.items()}
    return ops, components


@dataclass(frozen=True)
class Arg:
    schema: Schema
    required: bool = False


def _configured(op: str, name: str, schema: Schema, limits: DocLimits) -> Schema:
    """``schema`` with the bound the server's configuration sets, where the op checks one."""
    if (op, name) != ("event.wait", "timeout"):
        return schema
    bound = {"maximum": limits.wait_max_ms, "description": f"an integer from 0 to {limits.wait_max_ms}"}
    return {**schema, "anyOf": [{**member, **bound} if member.get("type") == "integer" else member
                                for member in schema["anyOf"]]}


def args_table(limits: DocLimits) -> dict[str, dict[str, Arg]]:
    """Every op's arguments: its Struct's fields, with their schemas (``schema.OP_ARGS``)."""
    ops, _ = _op_schemas()
    return {
        op: {name: Arg(_configured(op, name, prop, limits), name in schema.get("required", ()))
             for name, prop in schema["properties"].items()}
        for op, schema in ops.items()
    }


def _query(schema: Schema) -> Schema:
    """A query or path argument's schema: a query cannot say null, so an optional argument is
    its value's type (absent, or empty, is the null)."""
    members = schema.get("anyOf")
    if members is not None:
        kept = [m for m in members if m != {"type": "null"}]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf" and (k, v) != ("default", None)}
            return {**kept[0], **rest}
    return schema


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
_RESULT_BODY = _op_schemas()[1]["ResultBody"]
_ID = _RESULT_BODY["properties"]["agent_id"]
RECORD = _obj({**_RESULT_BODY["properties"], "id": _ID, "project_id": _ID, "stored_at": {"type": "string"},
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
            {"name": name, "in": "path", "required": True, "schema": _query(args[name].schema)} for name in names
        ]
        rest = {name: arg for name, arg in args.items() if name not in names}
        operation: dict[str, Any] = {
            "operationId": op, "summary": f"the {op} operation (also a WebSocket op)" if OPS[op].ws else op,
            "security": [{"bearer": []}],
        }
        if method == "POST":
            body = {"type": "object", "properties": {n: a.schema for n, a in rest.items()},
                    "description": f"a JSON object nested at most {limits.max_json_depth} levels deep "
                                   "(the object itself is level 1)"}
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
            params += [{"name": n, "in": "query", "required": a.required, "schema": _query(a.schema)}
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
        **_nested(), "Error": ERROR, "Health": HEALTH, "Status": STATUS,
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


def _nested() -> dict[str, Schema]:
    """The named argument schemas an op's arguments refer to (``ResultBody``, ...)."""
    ops, components = _op_schemas()
    own = {OP_ARGS[op].__name__ for op in ops} - {"ResultBody"}
    return {name: schema for name, schema in components.items() if name not in own}


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
    schemas = {**_nested(), "Error": ERROR, "Event": EVENT, "Status": STATUS,
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
