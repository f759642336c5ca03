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
    try:
        while (frame := _read(proc.stdout)) is not None:
            if frame[0] == "files":
                yield ChangeSet([_unpack(t) for t in frame[1]], [], None, None)
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
        head, churn, cochange, commits = done[1]
        history = History(head, Counter(churn), {path: Counter(c) for path, c in cochange.items()},
                          [(message, tuple(files)) for message, files in commits])
    stamp = (float(done[2][0]), float(done[2][1])) if done[2] is not None else None
    yield ChangeSet([], [], history, stamp)


def _child(root: str, withhold: list[str]) -> int:
    if hasattr(os, "nice"):
        os.nice(10)  # background work: the server's process and its clients go first
    scanner = TreeScanner(Path(root), SecretPolicy(tuple(withhold)))
    scanner.yield_gil = False  # this process has its own GIL
    out = sys.stdout.buffer
    batch: list[tuple[Any, ...]] = []
    for entry in scanner.scan_entries({}, set()):
        batch.append(_pack(entry))
        if len(batch) >= FRAME_FILES:
            _write(out, ("files", batch))
            batch = []
    if batch:
        _write(out, ("files", batch))
    history = scanner.read_history(None)
    packed = None if history is None else (history.head, dict(history.churn),
                                           {p: dict(c) for p, c in history.cochange.items()}, history.commits)
    _write(out, ("done", packed, scanner.git_stamp()))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2:]))
