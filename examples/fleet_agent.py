"""One agent of the `orchestra demo` fleet: an ordinary program on the Orchestra SDK.

Spawned by the server, it finds everything in its environment (``ORCHESTRA_URL``,
``ORCHESTRA_TOKEN``, ``ORCHESTRA_ISSUE_ID``, ``ORCHESTRA_TASK``, ``ORCHESTRA_CONTEXT_FILE``) and
its role in its token's agent type. What each role does, in rounds chained by events:

1. ``chief-architect`` reads the project's context, stores a plan (one work item per module),
   spawns the rest of the fleet through the spawn API and publishes ``plan_ready``;
2. implementers (``python-specialist``, ``go-specialist``, ``rust-specialist``,
   ``api-explorer``, ``devops-engineer``) wait for the plan, then run their module's tests and
   lint it;
3. ``code-reviewer`` and ``security-auditor`` wait for their module's implementation result,
   then review it (markers, docstrings; ``eval``, hard-coded credentials);
4. ``test-engineer`` waits for every review of the project, then runs the whole test suite;
5. ``documentation-expert`` waits for the test engineer, then checks what the docs cover.

Everything it finds is real and deterministic (it reads the files of the code base and runs its
tests). Every write carries an idempotency key made from the agent's id and the step, so an
agent restarted after a crash does its work again without storing anything twice. Exit 0 when
its result is stored; 1 when the server refuses or fails it; 2 for a usage error.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from orchestra import client as sdk

IMPLEMENTERS = ("python-specialist", "go-specialist", "rust-specialist", "api-explorer", "devops-engineer")
REVIEWERS = ("code-reviewer", "security-auditor")
#: how long a waiting agent waits for its round before it gives up (seconds)
ROUND_DEADLINE = float(os.environ.get("DEMO_ROUND_DEADLINE", "120"))
MARKERS = re.compile(r"\b(TODO|FIXME|XXX)\b")
SECRETS = re.compile(r"(?i)(password|secret|token|api_key)\s*=\s*['\"][^'\"]+['\"]")


# -- the work itself: pure functions over the code base --


def run_tests(root: Path, module: str | None = None) -> dict[str, Any]:
    """Run the project's unittest suite (or one module's tests) and count the outcome."""
    target = [f"tests.test_{module}"] if module else ["discover", "-s", "tests", "-t", "."]
    proc = subprocess.run(
        [sys.executable, "-m", "unittest", *target], cwd=root, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    tail = proc.stderr.strip().splitlines()
    ran = next((line for line in tail if line.startswith("Ran ")), "Ran 0 tests")
    # without the time it took: a rerun after a crash must store the same result (same key)
    ran = re.sub(r" in [0-9.]+s$", "", ran)
    return {"passed": proc.returncode == 0, "summary": ran, "verdict": tail[-1] if tail else ""}


def lint(source: str) -> dict[str, Any]:
    """Long lines, markers, public functions without a docstring."""
    tree = ast.parse(source)
    undocumented = [
        node.name for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_")
        and ast.get_docstring(node) is None
    ]
    return {
        "long_lines": sum(1 for line in source.splitlines() if len(line) > 100),
        "markers": len(MARKERS.findall(source)),
        "undocumented": undocumented,
    }


def audit(source: str) -> dict[str, Any]:
    """What a security auditor flags: eval/exec, shell=True, credentials in the code."""
    findings = []
    for number, line in enumerate(source.splitlines(), 1):
        if re.search(r"\b(eval|exec)\(", line):
            findings.append({"line": number, "kind": "dynamic-code", "text": line.strip()})
        if "shell=True" in line:
            findings.append({"line": number, "kind": "shell", "text": line.strip()})
        if SECRETS.search(line):
            findings.append({"line": number, "kind": "credential", "text": line.split("=")[0].strip()})
    return {"findings": findings}


# -- the roles --


class Agent:
    def __init__(self, client: sdk.Client, env: dict[str, str]) -> None:
        self.client = client
        self.agent_id = env["ORCHESTRA_AGENT_ID"]
        self.project = env["ORCHESTRA_PROJECT_ID"]
        self.issue = env["ORCHESTRA_ISSUE_ID"]
        self.task = env.get("ORCHESTRA_TASK", "")
        self.role = str(client.claims.get("agent_type"))
        self.params = json.loads(env.get("DEMO_PARAMS", "{}"))
        context_file = env.get("ORCHESTRA_CONTEXT_FILE")
        self.context: dict[str, Any] = {}
        if context_file and Path(context_file).is_file():
            self.context = json.loads(Path(context_file).read_text())
        root = self.context.get("context", {}).get("project_structure", {}).get("root")
        self.root = Path(root or self.params.get("root", "."))

    def key(self, step: str) -> str:
        """The idempotency key of a step: the same for a rerun of this agent."""
        return f"{self.agent_id}:{step}"

    async def store(self, result: dict[str, Any]) -> dict[str, Any]:
        """Store the result once: a rerun sends the same key, and its work is deterministic."""
        return await self.client.store_result(self.issue, result, idempotency_key=self.key("result"))

    async def wait_for(self, event_type: str, flt: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait until ``count`` matching events arrived (or the round's deadline passed)."""
        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + ROUND_DEADLINE
        # From the oldest retained event, not from this agent's server-side position: an agent
        # restarted after a crash must see again the events its first run had already taken.
        since = "0"
        while len(seen) < count and time.monotonic() < deadline:
            answer = await self.client.wait(event_type, filter=flt, since=since, limit=100,
                                            timeout=min(10.0, max(0.1, deadline - time.monotonic())))
            for event in answer["events"]:
                seen[event["event_id"]] = event
            since = answer["next_cursor"]
        return list(seen.values())

    async def run(self) -> dict[str, Any]:
        if self.role == "chief-architect":
            return await self.plan()
        if self.role in IMPLEMENTERS:
            return await self.implement()
        if self.role in REVIEWERS:
            return await self.review()
        if self.role == "test-engineer":
            return await self.verify()
        return await self.document()

    async def plan(self) -> dict[str, Any]:
        context = await self.client.context_get(self.issue, task=self.task or "plan the work")
        files = context["context"]["project_structure"]["files"]
        modules = sorted(Path(f).stem for f in files if f.startswith("inventory/") and not f.endswith("__init__.py"))
        fleet = self.params.get("fleet", [])  # [agent_type, module] pairs, from the demo
        plan = {"status": "success", "modules": modules, "fleet_size": len(fleet) + 1}
        stored = await self.store(plan)
        expect = {
            "reviews": sum(1 for t, _ in fleet if t in REVIEWERS),
            "tests": sum(1 for t, _ in fleet if t == "test-engineer"),
        }
        for n, (agent_type, module) in enumerate(fleet):
            params = {"module": module, "root": str(self.root), "expect": expect}
            await self.client.spawn(
                agent_type, f"{self.project}-{module}" if module else f"{self.project}-all",
                task=f"{agent_type} work on inventory/{module}.py" if module else f"{agent_type} for the project",
                environment={"DEMO_PARAMS": json.dumps(params)},
                idempotency_key=self.key(f"spawn-{n}"),
            )
        await self.client.publish("plan_ready", {"modules": modules, "result_id": stored["id"]},
                                  topic="coordination", correlation_id=self.issue, round=1,
                                  idempotency_key=self.key("plan_ready"))
        return plan

    async def implement(self) -> dict[str, Any]:
        await self.wait_for("plan_ready", "topic:coordination")
        module = self.params["module"]
        await self.client.context_get(self.issue, task=self.task)
        source = (self.root / "inventory" / f"{module}.py").read_text()
        tests = await trio.to_thread.run_sync(run_tests, self.root, module)
        result = {"status": "success" if tests["passed"] else "failure", "module": module,
                  "tests": tests, "lint": lint(source)}
        await self.store(result)
        await self.client.publish("implementation_ready", {"module": module, "issue_id": self.issue},
                                  topic="coordination", correlation_id=self.issue, round=2,
                                  idempotency_key=self.key("implementation_ready"))
        return result

    async def review(self) -> dict[str, Any]:
        module = self.params["module"]
        await self.wait_for("implementation_ready", f"module:{module}")
        source = (self.root / "inventory" / f"{module}.py").read_text()
        found = audit(source) if self.role == "security-auditor" else lint(source)
        result = {"status": "success", "module": module, "review": found}
        await self.store(result)
        await self.client.publish("review_done", {"module": module, "by": self.role},
                                  topic="coordination", correlation_id=self.issue, round=3,
                                  idempotency_key=self.key("review_done"))
        return result

    async def verify(self) -> dict[str, Any]:
        reviews = await self.wait_for("review_done", "topic:coordination", self.params["expect"]["reviews"])
        tests = await trio.to_thread.run_sync(run_tests, self.root, None)
        result = {"status": "success" if tests["passed"] else "failure", "tests": tests,
                  "reviews_seen": len(reviews)}
        await self.store(result)
        await self.client.publish("verified", {"passed": tests["passed"]}, topic="coordination",
                                  correlation_id=self.issue, round=4, idempotency_key=self.key("verified"))
        return result

    async def document(self) -> dict[str, Any]:
        await self.wait_for("verified", "topic:coordination", max(1, self.params["expect"]["tests"]))
        readme = (self.root / "README.md").read_text() if (self.root / "README.md").exists() else ""
        modules = sorted(p.stem for p in (self.root / "inventory").glob("*.py") if p.stem != "__init__")
        undocumented = {m: lint((self.root / "inventory" / f"{m}.py").read_text())["undocumented"] for m in modules}
        result = {"status": "success", "modules_in_readme": [m for m in modules if f"`{m}`" in readme],
                  "undocumented": {m: names for m, names in undocumented.items() if names}}
        await self.store(result)
        return result


async def main_async(env: dict[str, str]) -> dict[str, Any]:
    async with sdk.connect(env["ORCHESTRA_URL"], env["ORCHESTRA_TOKEN"]) as client:
        return await Agent(client, env).run()


def main() -> int:
    env = dict(os.environ)
    missing = [k for k in ("ORCHESTRA_URL", "ORCHESTRA_TOKEN", "ORCHESTRA_AGENT_ID", "ORCHESTRA_PROJECT_ID",
                           "ORCHESTRA_ISSUE_ID") if not env.get(k)]
    if missing:
        print(f"fleet_agent: missing {', '.join(missing)} (it runs as an agent spawned by orchestra)",
              file=sys.stderr)
        return 2
    try:
        result = trio.run(main_async, env)
    except sdk.OrchestraError as exc:
        print(f"fleet_agent: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"agent_id": env["ORCHESTRA_AGENT_ID"], "status": result.get("status")}))
    return 0 if result.get("status") == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
