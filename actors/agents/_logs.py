"""An agent's log: stdout and stderr appended to one file, size-capped and rotated."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["RotatingLog", "tail_lines", "MAX_TAIL_LINES", "MAX_TAIL_BYTES"]

#: ``logs?tail=N``: at most this many lines, read from at most this many bytes.
MAX_TAIL_LINES = 10_000
MAX_TAIL_BYTES = 1024 * 1024


class RotatingLog:
    """Appends bytes to ``path``; past ``max_bytes`` the file becomes ``path.1`` (``.1``
    becomes ``.2`` ..., at most ``backups`` kept) and a new one starts.

    Bound: at most ``(backups + 1) * max_bytes`` bytes on disk per agent.
    """

    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024, backups: int = 2) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
        self.size = self._file.tell()

    def write(self, data: bytes | bytearray) -> None:
        # only the end of a chunk longer than every file kept can be kept
        data = data[-self.max_bytes * (self.backups + 1) :]
        view = memoryview(data)
        while view:
            if self.size >= self.max_bytes:
                self._rotate()
            piece = view[: self.max_bytes - self.size]
            self._file.write(piece)
            self.size += len(piece)
            view = view[len(piece) :]

    def _rotate(self) -> None:
        self._file.close()
        for n in range(self.backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            newer = self.path.with_name(f"{self.path.name}.{n - 1}") if n > 1 else self.path
            if newer.exists():
                os.replace(newer, older)
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self.size = 0

    def close(self) -> None:
        self._file.close()


def _tail_of(path: Path, budget: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - budget))
            return f.read(budget)
    except OSError:
        return b""


def tail_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines (at most MAX_TAIL_LINES) of the log, continuing into ``path.1``
    when the current file holds fewer; decoded as UTF-8 with replacement. Reads at most
    MAX_TAIL_BYTES."""
    n = max(0, min(n, MAX_TAIL_LINES))
    if n == 0:
        return []
    data = _tail_of(path, MAX_TAIL_BYTES)
    if data.count(b"\n") < n and len(data) < MAX_TAIL_BYTES:
        data = _tail_of(path.with_name(path.name + ".1"), MAX_TAIL_BYTES - len(data)) + data
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:]
