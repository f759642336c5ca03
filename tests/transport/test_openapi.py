"""The API's schema documents (issue 15, "A schema for the API"): complete against the route
and op tables, and true of the server (schemathesis drives every operation of the document
against a real server: no 500, every answer documented and matching its schema)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
from orchestra.actors.profiles import Profiles
from orchestra.actors.system import ActorSystem, SystemConfig
from orchestra.transport.api import Api, ApiConfig
from orchestra.transport.auth import Auth
from orchestra.transport.openapi import ARGS, DocLimits, asyncapi, openapi
from orchestra.transport.ops import OPS
from orchestra.transport.routes import _ROUTES
from orchestra.transport.server import Server, ServerConfig

from tests.conftest import SECRET

#: schemathesis examples per operation and generation mode (CI: bounded; more by env)
EXAMPLES = int(os.environ.get("ORCHESTRA_SCHEMATHESIS_EXAMPLES", "10"))


def _path(pattern: str, names: tuple[str, ...]) -> str:
    for name in names:
        pattern = pattern.replace("([^/]+)", "{" + name + "}", 1)
    return pattern


def test_every_route_is_in_the_openapi_document():
    doc = openapi(DocLimits("test"))
    for method, pattern, op, names, status in _ROUTES:
        path = _path(pattern.pattern, names)
        assert path in doc["paths"], path
        operation = doc["paths"][path].get(method.lower())
        assert operation is not None, f"{method} {path} missing from /openapi.json"
        assert operation["operationId"] == op and str(status) in operation["responses"]
        declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert declared == set(names)
    for path in ("/health", "/status", "/metrics", "/openapi.json", "/asyncapi.json"):
        assert "get" in doc["paths"][path]


def test_every_op_has_its_arguments_described_and_every_ws_op_is_in_the_asyncapi_document():
    assert set(ARGS) == set(OPS), "an op without an argument description in transport/openapi.py"
    doc = asyncapi(DocLimits("test"))
    assert {name for name, op in OPS.items() if op.ws} <= set(doc["operations"])
    assert "admin.faults" not in doc["operations"]  # HTTP only


def test_the_hostile_specs_drive_only_documented_arguments():
    """The fields the hostile-input suite knows each op to take are the documented ones."""
    from tests.transport.test_hostile import SPECS

    ignored = {"extra", "idempotency_key"}  # an unknown field; the key is a header on HTTP
    for op, spec in SPECS.items():
        fields = {path[0] for path in spec.fields} - ignored - ({"project_id"} if op == "status" else set())
        assert fields <= set(ARGS[op]), (op, fields - set(ARGS[op]))


def test_the_documents_are_valid():
    import schemathesis

    schema = schemathesis.openapi.from_dict(openapi(DocLimits("test")))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(_ROUTES) + 5


async def test_the_server_serves_its_documents(server):
    r = await server.request("GET", "/openapi.json")
    assert r.status == 200 and r.json()["openapi"] == "3.1.0"
    assert r.json()["paths"]["/api/events/wait/{event_type}"]["get"]["parameters"]
    r = await server.request("GET", "/asyncapi.json")
    assert r.status == 200 and r.json()["asyncapi"] == "3.0.0"


# -- schemathesis against a real server --


def _code_base(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def main():\n    return 1\n")
    (root / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["trio"]\n')
    return root


#: Arguments whose rule a schema cannot state whole (a grammar, a cursor only the server
#: issues, a time a calendar must check): a valid-looking value may still be refused.
SEMANTIC = {"filter", "since", "until", "cursor", "body"}


def _accepted_as_documented(case: Any, response: Any, findings: list[str]) -> None:
    """A request the document calls valid is not refused as malformed: a 400 naming an
    argument means the document is looser than the server's reader (they drifted)."""
    if response.status_code != 400:
        return
    error = response.json()
    if error.get("code") == "EVT_003":  # the filter grammar: see SEMANTIC
        return
    field = str(error.get("field", "")).split(".")[0].split("[")[0]
    if field not in SEMANTIC:
        findings.append(f"{case.operation.label}: a documented-valid request was refused: {error['message'][:300]}"
                        f" (query {case.query}, body {str(case.body)[:200]})")


def _drive(doc: dict[str, Any], base_url: str, token: str) -> list[str]:
    """Run schemathesis over every operation of ``doc`` (in a worker thread: its client is
    blocking); the findings, one line each."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    schema = schemathesis.openapi.from_dict(doc)
    findings: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    def examples(operation: Any, mode: GenerationMode) -> None:
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            try:
                response = case.call_and_validate(base_url=base_url, headers=headers, checks=checks, timeout=20)
                if mode is GenerationMode.POSITIVE:
                    _accepted_as_documented(case, response, findings)
            # failed checks (a group of them), no answer in time, ...
            except (Exception, BaseExceptionGroup) as exc:
                findings.append(f"{case.operation.label}: {type(exc).__name__}: {str(exc)[:600]}")

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
            assert mode is GenerationMode.NEGATIVE, operation.label

    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            examples(result.ok(), mode)
    return findings


async def test_schemathesis_finds_no_500_and_no_answer_off_its_schema(nursery, tmp_path):
    profiles = Profiles()
    system = ActorSystem(SystemConfig(data_dir=tmp_path / "data", profiles=profiles,
                                      default_root=_code_base(tmp_path / "code")))
    # a short longest wait: a generated `timeout` cannot hold the run for minutes
    api = Api(system, Auth(SECRET, profiles), ApiConfig(rate_limits=False, wait_max_ms=50, wait_default_ms=50))
    server = Server(api, ServerConfig(max_body_bytes=1024 * 1024))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await nursery.start(system.run)
    await nursery.start(server.serve, listeners)
    doc = openapi(DocLimits("test", wait_max_ms=50, max_body_bytes=1024 * 1024))
    token = api.auth.mint(sub="schemathesis", agent_type="chief-architect", project_id="p1")
    findings = await trio.to_thread.run_sync(_drive, doc, f"http://127.0.0.1:{port}", token)
    assert not findings, "\n".join(findings)
    assert system.root.total_restarts() == 0


@pytest.mark.parametrize("field", sorted({(op, name) for op, args in ARGS.items() for name in args}))
def test_argument_bounds_come_from_the_readers_constants(field):
    """Each documented argument has a schema with a type or a choice (no bare ``{}``)."""
    op, name = field
    schema = ARGS[op][name].schema
    assert {"type", "enum", "anyOf", "$ref"} & set(schema), (op, name, schema)


def _edges(schema: dict[str, Any]) -> list[tuple[Any, bool]]:
    """Values at and just past the bounds ``schema`` states: (value, documented as valid)."""
    out: list[tuple[Any, bool]] = []
    members = [m for m in schema.get("anyOf", [schema]) if m != {"type": "null"}]
    if len(members) == 1:  # an optional argument: its value's bounds
        schema = members[0]
    kind = schema.get("type")
    if kind in ("integer", "number"):
        step = 1 if kind == "integer" else 0.5
        if "maximum" in schema:
            out += [(schema["maximum"], True), (schema["maximum"] + step, False)]
        if "minimum" in schema:
            out += [(schema["minimum"], True), (schema["minimum"] - step, False)]
        if "exclusiveMinimum" in schema:
            out += [(schema["exclusiveMinimum"], False)]
    elif kind == "string" and "maxLength" in schema and "pattern" in schema and "\\x0b" in schema["pattern"]:
        out += [("a" * schema["maxLength"], True), ("a" * (schema["maxLength"] + 1), False)]  # free text
    return out


async def test_the_documented_bounds_are_the_readers_bounds(nursery, tmp_path):
    """At each documented bound the op's reader accepts; one step past, it refuses naming the
    argument: the document and the readers agree (over WebSocket, every op with bounds)."""
    from orchestra.transport.openapi import args_table

    from tests.transport.test_hostile import SPECS

    profiles = Profiles()
    system = ActorSystem(SystemConfig(data_dir=tmp_path / "data", profiles=profiles,
                                      default_root=_code_base(tmp_path / "code")))
    api = Api(system, Auth(SECRET, profiles), ApiConfig(rate_limits=False, wait_max_ms=50, wait_default_ms=50))
    server = Server(api, ServerConfig())
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    await nursery.start(system.run)
    await nursery.start(server.serve, listeners)
    from tests.conftest import Harness

    h = Harness(listeners[0].socket.getsockname()[1], api, system, server, tmp_path)
    table = args_table(DocLimits("test", wait_max_ms=50))
    tried = 0
    async with h.ws(h.token(agent_type="chief-architect", sub="bounds")) as ws:
        for op, args in sorted(table.items()):
            if not OPS[op].ws or op not in SPECS:
                continue
            for name, arg in args.items():
                for value, valid in _edges(arg.schema):
                    reply = await ws.call(op, **{**SPECS[op].base, name: value})
                    field = "" if reply["ok"] else str(reply["error"].get("field", ""))
                    named = field == name or field.endswith("." + name) or (
                        not reply["ok"] and reply["error"]["code"] == "CTX_002" and name == "max_bytes")
                    assert named is not valid, (op, name, value, reply)
                    tried += 1
    assert tried >= 30, tried
