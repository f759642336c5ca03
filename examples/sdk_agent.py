"""A complete example agent on the Orchestra SDK (docs/sdk.md).

It does what an agent of a fleet does: reads the context the server prepared for its issue,
does some deterministic work on it (here: it lists the relevant files and counts the
TODO/FIXME markers in those whose content came inlined), stores its result, tells the others
with an event, and waits for a review of its work.

Run it as a spawned agent (the server sets the environment) or by hand::

    export ORCHESTRA_URL=http://127.0.0.1:3001
    export ORCHESTRA_TOKEN=$(orchestra token --project web --agent-type code-reviewer --sub rev-1)
    python examples/sdk_agent.py --issue ISS-7 --task "review the auth module" --wait 60

It prints one JSON object on stdout and exits 0 when its result is stored; 2 for a usage
error, 3 when the server refuses its token, 1 for any other error of the server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

import trio

from orchestra import client as sdk

MARKER = re.compile(r"\b(TODO|FIXME|XXX)\b")


def review(context: dict[str, Any]) -> dict[str, Any]:
    """The agent's own work: deterministic, from the context alone."""
    files = context["context"]["relevant_files"]
    markers = {f["path"]: len(MARKER.findall(f["content"])) for f in files if f.get("content")}
    return {
        "status": "success",
        "files_reviewed": [f["path"] for f in files],
        "markers": {path: n for path, n in markers.items() if n},
        "marker_total": sum(markers.values()),
        "project_type": context["context"].get("metadata", {}).get("project_type"),
    }


async def run_agent(url: str, token: str, issue_id: str, task: str, wait_seconds: float) -> dict[str, Any]:
    async with sdk.connect(url, token) as client:
        # 1. read the context of this issue (files ranked for the task, earlier results)
        context = await client.context_get(issue_id, task=task)
        # 2. work, and store the result (sent again after a dropped connection, stored once)
        result = review(context)
        stored = await client.store_result(issue_id, result)
        # 3. tell the fleet (the server itself also publishes agent_completed)
        await client.publish(
            "review_ready", {"issue_id": issue_id, "result_id": stored["id"], "markers": result["marker_total"]},
            topic="coordination", correlation_id=issue_id,
        )
        # 4. wait for someone to answer on this issue (the server keeps this agent's position)
        answer = await client.wait("review_acknowledged", filter=f"issue_id:{issue_id}", timeout=wait_seconds)
        return {
            "issue_id": issue_id,
            "result_id": stored["id"],
            "next_agents": stored["next_agents"],
            "markers": result["marker_total"],
            "acknowledged_by": [e["publisher"] for e in answer["events"]],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--issue", default=os.environ.get("ORCHESTRA_ISSUE_ID"))
    parser.add_argument("--task", default=os.environ.get("ORCHESTRA_TASK", ""))
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for an acknowledgement")
    args = parser.parse_args(argv)
    url, token = os.environ.get("ORCHESTRA_URL"), os.environ.get("ORCHESTRA_TOKEN")
    if not (url and token and args.issue):
        print("needs ORCHESTRA_URL, ORCHESTRA_TOKEN and an issue (--issue or ORCHESTRA_ISSUE_ID)", file=sys.stderr)
        return 2
    try:
        summary = trio.run(run_agent, url, token, args.issue, args.task, args.wait)
    except (sdk.Unauthorized, sdk.Forbidden) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    except sdk.OrchestraError as exc:
        print(f"failed: {exc} (request {exc.request_id})", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
