"""One definition of each op's arguments (issue 15): the validation at the edge and the API
documents' schemas are both made from the op's Struct (``transport/schema.py``), so a bound
changed there moves both, and a value the document calls valid is one the server accepts."""

from __future__ import annotations

from typing import Annotated, Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import Meta, defstruct
from orchestra.actors.errors import InvalidEvent, InvalidRequest, TooLarge
from orchestra.actors.schema import ID_RULE, Args, EventSide, Id, integer, read, text
from orchestra.transport.errors import ApiError, from_exception
from orchestra.transport.openapi import ARGS, DocLimits, asyncapi, openapi, struct_schemas
from orchestra.transport.ops import OPS
from orchestra.transport.routes import _ROUTES
from orchestra.transport.schema import OP_ARGS

from tests.conftest import result_body


def _probe(bound: int) -> type[Args]:
    """A test-local op's arguments, its bounds all ``bound``."""
    return defstruct("Probe", [
        ("n", Annotated[int, integer(1, bound)], 1),
        ("name", Annotated[str, text(bound)] | None, None),
        ("tags", Annotated[list[Id], Meta(max_length=bound, description=f"at most {bound} ids")] | None, None),
        ("event_side", Annotated[int, EventSide, integer(0, bound)] | None, None),
    ], bases=(Args,), kw_only=True)


@pytest.mark.parametrize("bound", [3, 7])
def test_a_bound_changed_in_the_struct_moves_the_document_and_the_validation(bound):
    kind = _probe(bound)
    _, components = struct_schemas([kind])
    props = components["Probe"]["properties"]
    assert props["n"]["maximum"] == bound
    assert props["name"]["anyOf"][0]["maxLength"] == bound
    assert props["tags"]["anyOf"][0]["maxItems"] == bound
    # the server's side, from the same class
    assert read(kind, {"n": bound, "name": "x" * bound, "tags": ["t"] * bound}).n == bound
    for args, field in [({"n": bound + 1}, "n"), ({"name": "x" * (bound + 1)}, "name"),
                        ({"tags": ["t"] * (bound + 1)}, "tags")]:
        with pytest.raises(InvalidRequest) as info:
            read(kind, args)
        assert info.value.field == field and str(bound) in info.value.message
    with pytest.raises(InvalidEvent) as event:
        read(kind, {"event_side": bound + 1})
    assert event.value.details["field"] == "event_side"


def _route(op: str) -> tuple[str, str, tuple[str, ...]]:
    method, pattern, _, names, _ = next(r for r in _ROUTES if r[2] == op)
    path = pattern.pattern
    for name in names:
        path = path.replace("([^/]+)", "{" + name + "}", 1)
    return method, path, names


def test_the_documents_arguments_are_the_structs_fields():
    """Every op's documented arguments, on HTTP and WebSocket, are its Struct's fields with the
    Struct's schemas and requiredness: the documents are made from the Structs."""
    assert set(OP_ARGS) == set(OPS)
    _, components = struct_schemas(list(dict.fromkeys(OP_ARGS.values())))
    doc, ws = openapi(DocLimits("t")), asyncapi(DocLimits("t"))
    http_ops = {r[2] for r in _ROUTES}
    for op, kind in OP_ARGS.items():
        own = components[kind.__name__]
        assert set(ARGS[op]) == set(kind.__struct_fields__) == set(own["properties"]), op
        assert {n for n, a in ARGS[op].items() if a.required} == set(own.get("required", ())), op
        if op in http_ops:
            method, path, names = _route(op)
            operation = doc["paths"][path][method.lower()]
            params = {p["name"]: p for p in operation["parameters"] if p["in"] in ("path", "query")}
            if method == "POST":
                body = operation["requestBody"]["content"]["application/json"]["schema"]
                documented = {**{n: p["schema"] for n, p in params.items()}, **body["properties"]}
                assert set(body.get("required", ())) == set(own.get("required", ())) - set(names), op
            else:
                documented = {n: p["schema"] for n, p in params.items()}
                assert {n for n, p in params.items() if p["required"]} == {*own.get("required", ()), *names}, op
            assert set(documented) == set(own["properties"]), op
            for name, schema in own["properties"].items():
                if (op, name) != ("event.wait", "timeout"):  # the server's setting fills its maximum
                    bare = [m for m in schema.get("anyOf", [schema]) if m != {"type": "null"}]
                    assert documented[name] == schema or bare[0].items() <= documented[name].items(), (op, name)
        if OPS[op].ws:
            key = "".join(p.capitalize() for p in op.replace("_", ".").split(".")) + "Request"
            payload = ws["channels"]["ws"]["messages"][key]["payload"]
            assert set(own["properties"]) <= set(payload["properties"]), op
            assert set(payload["required"]) == {"op", *own.get("required", ())}, op
    # the nested definitions are the documents' components
    for name in ("ResultBody", "ResultStatus", "ContextRequirements"):
        assert doc["components"]["schemas"][name] == components[name]


def test_the_configured_bound_is_the_one_the_op_checks():
    doc = openapi(DocLimits("t", wait_max_ms=1234))
    params = doc["paths"]["/api/events/wait/{event_type}"]["get"]["parameters"]
    timeout = next(p for p in params if p["name"] == "timeout")["schema"]
    assert timeout["maximum"] == 1234 and timeout["minimum"] == 0


# -- the refusal: the error object the PROTOCOL names, from msgspec's words --


@pytest.mark.parametrize(("op", "args", "code", "field"), [
    ("result.store", {**result_body(), "issue_id": "a\n"}, "REQ_001", "issue_id"),
    ("result.store", {**result_body(), "result": {}}, "REQ_001", "result.status"),
    ("result.store", {**result_body(), "result": 5}, "REQ_001", "result"),
    ("result.store", {**result_body(), "timestamp": None}, "REQ_001", "timestamp"),
    ("result.store", {**result_body(), "project_id": ""}, "REQ_001", "project_id"),
    ("result.store_batch", {"results": [result_body(), result_body(status="")]}, "REQ_001",
     "results[1].result.status"),
    ("result.store_batch", {"results": []}, "REQ_001", "results"),
    ("event.publish", {"event_type": "a b"}, "EVT_002", "event_type"),
    ("event.publish", {"event_type": "a\n"}, "EVT_002", "event_type"),
    ("event.publish", {"event_type": "a", "topic": ""}, "EVT_002", "topic"),
    ("event.publish", {"event_type": "a", "references": ["r", 5]}, "EVT_002", "references[1]"),
    ("event.publish", {"event_type": "a", "data": []}, "EVT_002", "data"),
    ("event.publish", {"event_type": "a", "ttl_seconds": 0}, "EVT_002", "ttl_seconds"),
    ("event.publish", {"event_type": "a", "round": 2.5}, "EVT_002", "round"),
    ("event.publish", {"event_type": "a", "project_id": 5}, "REQ_001", "project_id"),
    ("event.subscribe", {"event_types": ["ok", "n o"]}, "EVT_002", "event_types[1]"),
    ("event.subscribe", {"event_types": []}, "REQ_001", "event_types"),
    ("event.subscribe", {"topics": ["t", "\x00"]}, "REQ_001", "topics[1]"),
    ("event.subscribe", {"since": {"p": "x"}}, "REQ_001", "since.p"),
    ("event.subscribe", {"since": {" ": "1"}}, "REQ_001", "since"),
    ("event.wait", {"event_type": "a", "limit": "0"}, "REQ_001", "limit"),
    ("event.wait", {"event_type": "a", "since": "1\n"}, "REQ_001", "since"),
    ("context.get", {"issue_id": "i", "max_bytes": 10**9}, "CTX_002", None),
    ("context.get", {"issue_id": "i", "max_bytes": 1}, "REQ_001", "max_bytes"),
    ("agent.spawn", {"agent_type": "a", "issue_id": "i", "context_requirements": {"max_bytes": 10**9}},
     "CTX_002", "context_requirements.max_bytes"),
    ("agent.spawn", {"agent_type": "a", "issue_id": "i", "environment": {"A": 5}}, "REQ_001", "environment.A"),
    ("agent.spawn", {"agent_type": "a", "issue_id": "i", "environment": {"ORCHESTRA_X": "v"}}, "REQ_001",
     "environment"),
    ("agent.spawn", {"agent_type": "a", "issue_id": "i", "environment": {"A\n": "v"}}, "REQ_001", "environment"),
    ("agent.spawn", {"issue_id": "i"}, "REQ_001", "agent_type"),
    ("agent.list", {"state": "asleep"}, "REQ_001", "state"),
    ("agent.stop", {"agent_id": "a", "grace_seconds": "nan"}, "REQ_001", "grace_seconds"),
    ("agent.logs", {"agent_id": "a", "tail": True}, "REQ_001", "tail"),
    ("admin.faults", {"target": "store", "kind": "melt"}, "REQ_001", "kind"),
])
def test_a_refusal_names_the_field_with_the_protocol_code(op, args, code, field):
    with pytest.raises((InvalidRequest, InvalidEvent, ApiError, TooLarge)) as info:
        read(OP_ARGS[op], args)
    error = from_exception(info.value, "req-1")
    assert error.code == code, (error.code, error.message)
    if field is not None:
        assert error.details.get("field") == field, error.details
        assert field.split(".")[0].split("[")[0] in error.message


def test_a_missing_id_and_a_bad_one_say_what_an_id_is():
    for args in ({}, {"result_id": "\x7f"}):
        with pytest.raises(InvalidRequest) as info:
            read(OP_ARGS["result.get"], args)
        assert info.value.field == "result_id" and ID_RULE in info.value.message


def test_query_strings_and_json_numbers_are_read_alike():
    """A query's "10" and a frame's 10 or 10.0 are the same integer; an empty query value is
    an absent argument (its default), where a body's empty id is refused."""
    kind = OP_ARGS["result.query"]
    assert read(kind, {"limit": "10"}).limit == read(kind, {"limit": 10}).limit == read(kind, {"limit": 10.0}).limit
    assert read(kind, {"limit": "", "issue_id": ""}).limit == 50
    assert read(OP_ARGS["agent.stop"], {"agent_id": "a", "grace_seconds": "1.5"}).grace_seconds == 1.5
    for bad in ("1.5", "0x10", " 5", "ten", 10.5, True):
        with pytest.raises(InvalidRequest):
            read(kind, {"limit": bad})


# -- the document and the validation agree on values --

_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(allow_nan=False),
    st.text(max_size=20), st.text(alphabet=st.characters(max_codepoint=0xa0), max_size=6),
    st.sampled_from(["a\n", "\n", " ", "x" * 256, "x" * 257, "1", "*", "crash", "running", "ok", "a:b.c-d_e"]),
    st.lists(st.sampled_from(["a", "", "a\n", 5]), max_size=3),
    st.dictionaries(st.sampled_from(["A", "b_1", "ORCHESTRA_X", "1a", "p", "status", "max_bytes"]),
                    st.sampled_from(["v", "1", 5, "", "\x00"]), max_size=3),
)
_VALID = {"id": "x", "event_type": "e.t", "kind": "crash", "result": {"status": "s"},
          "results": [{"agent_id": "a", "agent_type": "t", "issue_id": "i", "result": {"status": "s"}}]}


def _base(op: str) -> dict[str, Any]:
    kind = OP_ARGS[op]
    required = set(struct_schemas([kind])[1][kind.__name__].get("required", ()))
    return {name: _VALID.get(name, "x") for name in required}


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(field=st.sampled_from(sorted((op, name) for op, args in ARGS.items() for name in args)), value=_values)
def test_a_value_the_document_calls_valid_is_accepted_and_one_it_refuses_is_refused(field, value):
    op, name = field
    kind = OP_ARGS[op]
    _, components = struct_schemas([kind])
    schema = {**ARGS[op][name].schema, "components": {"schemas": components}}
    documented = jsonschema.Draft202012Validator(schema).is_valid(value)
    if value == "" and name not in ("results",) and op not in ("result.store", "event.publish"):
        return  # an empty query value is an absent argument
    args = {**_base(op), name: value}
    try:
        read(kind, args)
        accepted = True
    except (InvalidRequest, InvalidEvent, ApiError, TooLarge) as exc:
        accepted = False
        error = from_exception(exc, "r")
        assert error.status in (400, 413)
        if error.status == 400:
            assert str(error.details["field"]).split(".")[0].split("[")[0] == name, (error.details, name)
    lax = isinstance(value, str | float) and not isinstance(value, bool)  # a query's "10", JSON's 10.0
    if documented:
        assert accepted, (op, name, value)
    elif not lax:
        assert not accepted, (op, name, value)

