"""A crash loop escalates as designed (docs/design.md, the supervision tree) instead of spinning:
past its intensity a supervisor gives up and its parent restarts the whole subtree; past the
root's, the process exits (non-zero) so that whatever runs it can start it again."""

from __future__ import annotations

import trio
from orchestra.transport.testing_invariants import CONNECTION_LOST

from orchestra.testing import InProcessServer, Invariants, Ledger, ServerProcess
from tests.conftest import result_body
from tests.waiting import until


def _child(tree: dict, name: str) -> dict:
    return next(c for c in tree["children"] if c["id"] == name)


async def test_a_project_crash_loop_restarts_the_projects_subtree_and_serving_goes_on(nursery, tmp_path):
    server = await InProcessServer(tmp_path / "d", max_restarts=3).start(nursery)
    ledger = Ledger()
    tok = server.token("p1")
    try:
        await ledger.store_result(server, tok, "p1", result_body(n=0))
        for _ in range(3):  # within the projects supervisor's intensity: it restarts p1
            await server.faults.crash("project:p1", settle=10)
            await ledger.store_result(server, tok, "p1", result_body())
        status = (await server.request("GET", "/status", server.admin_token())).json()
        assert _child(status["actors"]["tree"], "projects")["restarts"] == 0
        await server.faults.crash("project:p1", settle=10)  # one more: it gives up, the root restarts it
        with trio.fail_after(10):
            while True:
                tree = (await server.request("GET", "/status", server.admin_token())).json()["actors"]["tree"]
                if _child(tree, "projects")["restarts"] == 1:
                    break
                await trio.sleep(0.02)
        async def stored() -> bool:  # the project comes back on its next request
            return (await ledger.store_result(server, tok, "p1", result_body(n=99))).status == 200

        await until(stored, "a write stored after the escalation", interval=0.05)
        await Invariants(server, ledger).check_all(restarts_at_least=4)
    finally:
        await server.stop()


async def test_a_root_crash_loop_ends_the_process_with_everything_acknowledged_kept(tmp_path):
    server = ServerProcess(tmp_path / "d")
    ledger = Ledger()
    try:
        await server.start()
        tok = server.token("p1")
        for i in range(5):
            await ledger.store_result(server, tok, "p1", result_body(n=i))
        with trio.fail_after(60):
            for _ in range(21):  # the root's intensity is 20 restarts in 60 s
                try:
                    await server.faults.crash("store", settle=10)
                except CONNECTION_LOST:  # the process gave up under this request
                    break
            code = await server.proc.wait()
        assert code == 1  # gave up: exits, never spins, and says why in one line
        said = server.log_path.read_text()
        assert "orchestra serve: supervisor 'root' gave up after too many restarts" in said
        assert "Traceback" not in said.split("supervisor 'root' gave up")[-1]
        await server.start()  # the next start on the same data dir has everything
        await Invariants(server, ledger).acknowledged_results()
        assert len(ledger.acked) == 5
    finally:
        await server.aclose()
