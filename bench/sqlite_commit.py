"""SQLite's own limit for durable results: ``python -m bench.sqlite_commit SECONDS SYNC``.

The store's schema and its pragmas (WAL, ``synchronous`` as given), rows of a stored result's
size, inserted by plain ``sqlite3`` on one thread with no event loop: one row per transaction,
119 rows per transaction (one per writer, as a group commit of 119 writers would take them) and
119 x 20 (the same writers with batches of 20). Prints one JSON object of rows/s and CPU
seconds per row (``*_cpu``).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from orchestra.actors.store import MIGRATIONS

BODY = b'{"id":"%s","project_id":"bench","result":{"status":"success","n":0},"agent_id":"w1","agent_type":"python-specialist","issue_id":"bench","stored_at":"2026-01-01T00:00:00.000000Z"}'


def rows_per_second(db: sqlite3.Connection, group: int, seconds: float, start: int) -> tuple[float, float, int]:
    """Rows/s, CPU seconds per row and the next row number."""
    n = start
    cpu = time.process_time()
    t = time.perf_counter()
    end = t + seconds
    while time.perf_counter() < end:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO results (id, project_id, issue_id, agent_type, agent_id, status, stored_at, body)"
            " VALUES (?, 'bench', 'bench', 'python-specialist', 'w1', 'success', '2026-01-01', ?)",
            [(f"r{i}", BODY % str(i).encode()) for i in range(n, n + group)])
        db.execute("COMMIT")
        n += group
    return (n - start) / (time.perf_counter() - t), (time.process_time() - cpu) / (n - start), n


def main() -> None:
    seconds, sync = float(sys.argv[1]), sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "bare.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={sync}")
        for script in MIGRATIONS:
            db.executescript(script)
        out, n = {}, 0
        for name, group in (("single", 1), ("group_119", 119), ("group_2380", 119 * 20)):
            out[name], out[f"{name}_cpu"], n = rows_per_second(db, group, seconds, n)
        db.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
