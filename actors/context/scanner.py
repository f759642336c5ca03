"""A cold index read by a child process, so the server's own process keeps its CPU and its GIL.

Reading and tokenizing every file of a root is most of a cold index (1.4 s of 1.7 s on 5,000
files). Done on a thread it holds the GIL against the event loop; done here it runs on another
core while the server only decodes what arrives. The child streams its findings as
length-prefixed ``marshal`` frames of at most :data:`FRAME_FILES` files (so decoding a frame
never holds the GIL for long), then one frame with the history. It is our own code reading
our own root, so ``marshal`` (fast, no code execution) is enough.

``python -m orchestra.actors.context.scanner ROOT [WITHHELD_PATTERN ...]`` runs the child.
"""

from __future__ import annotations

import marshal
import os
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .files import FileEntry
from .scanning import ChangeSet, History, TreeScanner
from .secrets import SecretPolicy

__all__ = ["scan_in_child", "ScanFailed"]

FRAME_FILES = 64
#: a frame also ends at this many (file, word) counts: a frame of large files would otherwise
#: hold the parent's GIL for 10-20 ms while it is decoded (about 1 ms per 10,000)
FRAME_WORDS = 20_000
_LEN = struct.Struct("<I")


class ScanFailed(Exception):
    """The child could not be started or did not finish its answer."""


def _pack(entry: FileEntry) -> tuple[Any, ...]:
    return (entry.path, entry.size, entry.mtime, entry.binary, dict(entry.counts or {}), entry.path_terms,
            entry.length, entry.defines, entry.imports, entry.language, entry.kind, entry.withheld)


def _unpack(t: tuple[Any, ...]) -> FileEntry:
    path, size, mtime, binary, counts, path_terms, length, defines, imports, language, kind, withheld = t
    return FileEntry(path, size, mtime, binary, counts=counts, path_terms=tuple(map(sys.intern, path_terms)), length=length,
                     defines=tuple(map(sys.intern, defines)), imports=tuple(imports), language=language, kind=kind,
                     withheld=withheld)


def _write(out: IO[bytes], frame: Any) -> None:
    data = marshal.dumps(frame)
    out.write(_LEN.pack(len(data)))
    out.write(data)


def _read(stream: IO[bytes]) -> Any:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (size,) = _LEN.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    try:
        return marshal.loads(data)
    except (ValueError, EOFError, TypeError) as exc:
        raise ScanFailed(f"unreadable frame from the scanner: {exc}") from None


def scan_in_child(root: Path,
                  started: Callable[[subprocess.Popen[bytes]], None] | None = None,
                  policy: SecretPolicy | None = None) -> Iterator[ChangeSet]:
    """Every file of ``root`` read by a child process: a cold :meth:`TreeScanner.scan`
    in parts, as they arrive; the last part holds the history. Raises :class:`ScanFailed`
    (possibly after some parts) if the child cannot be started or does not finish (killing
    the child, whose handle ``started`` receives, ends the scan that way)."""
    errors = tempfile.TemporaryFile()  # not a pipe: a chatty child must never block on it
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestra.actors.context.scanner", str(root),
             *(policy.extra if policy is not None else ())],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
        )
    except OSError as exc:
        errors.close()
        raise ScanFailed(f"could not start the scanner: {exc}") from None
    assert proc.stdout is not None
    if started is not None:
        started(proc)
    done = None
    together: dict[str, Counter[str]] = {}
    commits: list[tuple[str, tuple[str, ...]]] = []
    try:
        while (frame := _read(proc.stdout)) is not None:
            if frame[0] == "files":
                yield ChangeSet([_unpack(t) for t in frame[1]], [], None, None)
            elif frame[0] == "cochange":
                for path, c in frame[1].items():
                    together[path] = Counter(c)
            elif frame[0] == "commits":
                commits.extend(frame[1])  # marshal keeps tuples: (message, files) already
            elif frame[0] == "done":
                done = frame
                break
    finally:  # on any failure here the child's next write fails and it exits
        proc.stdout.close()
        proc.wait()
        errors.seek(0)
        error = errors.read()[-500:].decode("utf-8", "replace").strip()
        errors.close()
    if done is None or proc.returncode != 0:
        raise ScanFailed(f"the scanner exited with {proc.returncode}: {error or 'no answer'}")
    history = None
    if done[1] is not None:
        head, churn = done[1]
        history = History(head, Counter(churn), together, commits)
    stamp = (float(done[2][0]), float(done[2][1])) if done[2] is not None else None
    yield ChangeSet([], [], history, stamp)


def _child(root: str, withhold: list[str]) -> int:
    if hasattr(os, "nice"):
        os.nice(10)  # background work: the server's process and its clients go first
    scanner = TreeScanner(Path(root), SecretPolicy(tuple(withhold)))
    scanner.yield_gil = False  # this process has its own GIL
    out = sys.stdout.buffer
    batch: list[tuple[Any, ...]] = []
    words = 0
    for entry in scanner.scan_entries({}, set()):
        batch.append(_pack(entry))
        words += len(entry.counts or ())
        if len(batch) >= FRAME_FILES or words >= FRAME_WORDS:
            _write(out, ("files", batch))
            batch, words = [], 0
    if batch:
        _write(out, ("files", batch))
    history = scanner.read_history(None)
    packed = None
    if history is not None:  # in parts too: the co-changes and messages of 2,000 commits are MBs
        cochange = list(history.cochange.items())
        for i in range(0, len(cochange), FRAME_FILES * 4):
            _write(out, ("cochange", {p: dict(c) for p, c in cochange[i:i + FRAME_FILES * 4]}))
        for i in range(0, len(history.commits), FRAME_FILES * 4):
            _write(out, ("commits", history.commits[i:i + FRAME_FILES * 4]))
        packed = (history.head, dict(history.churn))
    _write(out, ("done", packed, scanner.git_stamp()))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2:]))
