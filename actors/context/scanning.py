"""Finding the files of a code base and what changed in them: walking (git's listing, or the
tree with its .gitignore), stat sweeps, reading changed files, and git's history.

Touches no index: a scan reads the disk and returns a :class:`ChangeSet` that an index applies,
so it may run on any thread (or in a child process, see scanner.py) while the index serves.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pathspec

from .files import FileEntry, read_file, real_relative
from .gitinfo import GIT
from .secrets import SecretPolicy, Withheld, holds_private_key

__all__ = ["ChangeSet", "History", "SKIP_DIRS", "TreeScanner", "YIELD_EVERY", "folder_decision",
           "parse_history"]

HISTORY_COMMITS = 2000
#: Indexing runs on worker threads in pure-Python loops that would hold the GIL for long
#: stretches, making the event loop's thread wait up to the switch interval (5 ms) at every
#: system call. Giving the GIL up every few files keeps the loop's latency low meanwhile.
YIELD_EVERY = 10
HISTORY_MAX_FILES_PER_COMMIT = 30  # bulk commits (renames, formatting) say little about coupling
#: of each commit's message and files, what is kept to find the commits naming an issue
HISTORY_MESSAGE_CHARS = 4096
HISTORY_MESSAGE_FILES = 200
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", "dist", "build", "target",
             ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", "vendor", ".idea", ".vscode"}


@dataclass(slots=True)
class ChangeSet:
    """What a scan found: files new or changed (already read), files gone, new history."""

    entries: list[FileEntry]
    removed: list[str]
    history: History | None
    #: git's own state when scanned (HEAD and index file times); None outside git
    git_stamp: tuple[float, float] | None = None



class TreeScanner:
    """The files under one root: listing, stat sweeps and reads. Holds no file state; safe to
    use from any thread."""

    def __init__(self, root: Path, policy: SecretPolicy | None = None) -> None:
        self.root = root.resolve()
        self.is_git = (self.root / ".git").exists()
        #: which files may hold secrets: never indexed by their words, never read for an answer
        self.policy = policy or SecretPolicy()
        #: give the GIL up every YIELD_EVERY files (not needed in a process of its own)
        self.yield_gil = True

    def list_paths(self) -> list[str]:
        if self.is_git:
            try:
                out = subprocess.run(
                    [*GIT, "-C", str(self.root), "ls-files", "-co", "--exclude-standard", "-z"],
                    capture_output=True, timeout=30, check=True,
                ).stdout
                return [p for p in out.decode("utf-8", "replace").split("\0") if p]
            except (OSError, subprocess.SubprocessError):
                pass
        return self._walk()

    def _walk(self) -> list[str]:
        """The files outside git, as git would list them: every ``.gitignore`` on the way down
        applies to what is below it (a deeper one first), with git's syntax; a folder that is
        a git repository of its own is listed by its git. SKIP_DIRS are never entered."""
        out: list[str] = []
        ignores: dict[str, list[tuple[str, pathspec.GitIgnoreSpec]]] = {"": []}
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            specs = ignores.pop(rel_dir, [])
            if ".gitignore" in filenames:
                spec = _read_gitignore(os.path.join(dirpath, ".gitignore"))
                if spec is not None:
                    specs = [*specs, (rel_dir, spec)]
            kept = []
            for d in sorted(dirnames):
                if d in SKIP_DIRS or _ignored(rel_dir + d + "/", specs):
                    continue
                if os.path.exists(os.path.join(dirpath, d, ".git")):
                    nested = _git_files(os.path.join(dirpath, d))
                    if nested is not None:
                        out.extend(rel_dir + d + "/" + p for p in nested)
                        continue
                kept.append(d)
                ignores[rel_dir + d + "/"] = specs
            dirnames[:] = kept
            out.extend(rel_dir + name for name in filenames if not _ignored(rel_dir + name, specs))
        return sorted(out)

    def safe_path(self, rel: str) -> Path | None:
        """The file at ``rel`` if it resolves inside the root, else None (no escapes)."""
        if rel.startswith("/") or "\0" in rel:
            return None
        try:
            full = (self.root / rel).resolve()
        except (OSError, RuntimeError):
            return None
        if full != self.root and self.root not in full.parents:
            return None
        return full

    def read_text(self, rel: str) -> str:
        """The text of the file at ``rel`` for an answer: the one read of a file's content
        that reaches an agent. Raises :class:`~.secrets.Withheld` when it may hold secrets (by
        its path, by the path a link leads to, or by the bytes read now), ``OSError`` when it
        cannot be read or resolves outside the root."""
        policy = self.policy
        if rel.startswith("/") or "\0" in rel:
            raise FileNotFoundError(rel)
        if policy.withholds_path(rel):
            raise Withheld(rel)
        root = str(self.root)
        with open(os.path.join(root, rel), "rb") as f:
            real = real_relative(root, f.fileno(), rel)
            if real is None:
                raise FileNotFoundError(rel)
            if real != rel and policy.withholds_path(real):  # a link to a secret
                raise Withheld(rel)
            data = f.read()
        if holds_private_key(data):
            raise Withheld(rel)
        return data.decode("utf-8", "replace")

    def scan(self, known: dict[str, tuple[float, int]], head: str | None) -> ChangeSet:
        """Find and read what changed since ``known`` (a stat sweep: only changed files are read).

        Touches no state of the index, so it may run on any thread while the index serves.
        """
        seen: set[str] = set()
        entries = list(self.scan_entries(known, seen))
        removed = [rel for rel in known if rel not in seen]
        return ChangeSet(entries, removed, self.read_history(head), self.git_stamp())

    def scan_entries(self, known: dict[str, tuple[float, int]], seen: set[str]) -> Iterator[FileEntry]:
        """The files that changed since ``known``, read; every file present is added to ``seen``."""
        root = str(self.root)
        dirs_ok: dict[str, bool] = {}
        read = 0
        for rel in self.list_paths():
            parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
            ok = dirs_ok.get(parent)
            if ok is None:  # a directory that is a link out of the root hides nothing from us
                ok = dirs_ok[parent] = parent == "" or self.safe_path(parent) is not None
            if not ok:
                continue
            try:
                st = os.lstat(os.path.join(root, rel))
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                full = self.safe_path(rel)  # a link must stay inside the root
                if full is None:
                    continue
                try:
                    st = full.stat()
                except OSError:
                    continue
            elif ".." in rel.split("/"):
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            seen.add(rel)
            if known.get(rel) == (st.st_mtime, st.st_size):
                continue
            yield read_file(root, rel, st.st_size, st.st_mtime, self.policy)
            read += 1
            if read % YIELD_EVERY == 0 and self.yield_gil:
                time.sleep(0)

    def scan_paths(self, paths: set[str], known: dict[str, tuple[float, int]], head: str | None) -> ChangeSet:
        """Like :meth:`scan`, for the given relative paths only (from a file watcher)."""
        entries: list[FileEntry] = []
        removed: list[str] = []
        present: dict[str, os.stat_result] = {}
        for rel in sorted(paths):
            if rel.startswith("/") or ".." in rel.split("/") or rel.split("/", 1)[0] in SKIP_DIRS:
                continue
            full = self.safe_path(rel)
            try:
                st = full.stat() if full is not None else None
            except OSError:
                st = None
            if st is None or not stat.S_ISREG(st.st_mode):
                if rel in known:
                    removed.append(rel)
            elif known.get(rel) != (st.st_mtime, st.st_size):
                present[rel] = st
        ignored = (self._ignored_by_git(list(present)) if self.is_git
                   else self._ignored_outside_git(list(present)))
        for rel, st in present.items():
            if rel not in ignored:
                entries.append(read_file(str(self.root), rel, st.st_size, st.st_mtime, self.policy))
                if len(entries) % YIELD_EVERY == 0:
                    time.sleep(0)  # a large batch (a branch switch) must not starve the loop
        return ChangeSet(entries, removed, self.read_history(head), self.git_stamp())

    def _ignored_outside_git(self, paths: list[str]) -> set[str]:
        """Which of ``paths`` the walk leaves out (see :meth:`_walk`): under SKIP_DIRS, ignored
        by a ``.gitignore`` of their folders, or ignored by the git of a repository below."""
        ignored: set[str] = set()
        read: dict[str, pathspec.GitIgnoreSpec | None] = {}
        nested: dict[str, list[str]] = defaultdict(list)

        def spec_of(folder: str) -> pathspec.GitIgnoreSpec | None:
            if folder not in read:
                read[folder] = _read_gitignore(os.path.join(self.root, folder, ".gitignore"))
            return read[folder]

        for rel in paths:
            specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []
            folder, verdict = "", None
            parts = rel.split("/")
            for part in ["", *parts[:-1]]:
                folder = folder + part + "/" if part else ""
                if part and (part in SKIP_DIRS or _ignored(folder, specs)):
                    verdict = True
                    break
                if part and os.path.exists(os.path.join(self.root, folder, ".git")):
                    nested[folder].append(rel[len(folder):])
                    verdict = False
                    break
                spec = spec_of(folder)
                if spec is not None:
                    specs.append((folder, spec))
            else:
                verdict = _ignored(rel, specs)
            if verdict:
                ignored.add(rel)
        for folder, inside in nested.items():
            ignored.update(folder + p for p in self._ignored_by_git(inside, str(self.root / folder)))
        return ignored

    def _ignored_by_git(self, paths: list[str], repo: str | None = None) -> set[str]:
        """Which of ``paths`` git ignores, in one call for the whole batch."""
        if not paths:
            return set()
        try:
            out = subprocess.run(
                [*GIT, "-C", repo or str(self.root), "check-ignore", "-z", "--stdin"],
                input="\0".join(paths).encode() + b"\0", capture_output=True, timeout=30,
            )
        except (OSError, subprocess.SubprocessError):
            return set()
        return {p for p in out.stdout.decode("utf-8", "replace").split("\0") if p}

    def git_stamp(self) -> tuple[float, float] | None:
        """When git's HEAD and index last changed: staging or switching branches moves them."""
        if not self.is_git:
            return None
        stamp = []
        for name in ("HEAD", "index"):
            try:
                stamp.append(os.stat(os.path.join(self.root, ".git", name)).st_mtime)
            except OSError:
                stamp.append(0.0)
        return stamp[0], stamp[1]

    def read_history(self, known_head: str | None) -> History | None:
        """Churn, co-change and messages of the last commits, or None when HEAD has not moved."""
        if not self.is_git:
            return None
        try:
            head = subprocess.run([*GIT, "-C", str(self.root), "rev-parse", "HEAD"],
                                  capture_output=True, timeout=10).stdout.strip().decode()
        except (OSError, subprocess.SubprocessError):
            return None
        if not head or head == known_head:
            return None
        try:
            log = subprocess.run(
                [*GIT, "-C", str(self.root), "log", f"-n{HISTORY_COMMITS}", "--no-merges",
                 "--name-only", "--no-renames", "--format=%x1e%B%x1d"],
                capture_output=True, timeout=60,
            ).stdout.decode("utf-8", "replace")
        except (OSError, subprocess.SubprocessError):
            return None
        return parse_history(head, log)


class History(NamedTuple):
    """What the index keeps of the last :data:`HISTORY_COMMITS` commits (merges aside)."""

    head: str
    #: file -> commits that touched it
    churn: Counter[str]
    #: file -> file -> commits that touched both
    cochange: dict[str, Counter[str]]
    #: (message, files) of each commit, newest first; a long message keeps its head and tail,
    #: a commit of many files its first HISTORY_MESSAGE_FILES
    commits: list[tuple[str, tuple[str, ...]]]


def parse_history(head: str, log: str) -> History:
    """The history from ``git log --name-only --format=%x1e%B%x1d``."""
    churn: Counter[str] = Counter()
    cochange: dict[str, Counter[str]] = defaultdict(Counter)
    commits: list[tuple[str, tuple[str, ...]]] = []
    for block in log.split("\x1e"):
        message, _, names = block.partition("\x1d")
        files = [f for f in names.split("\n") if f]
        if len(message) > HISTORY_MESSAGE_CHARS:
            half = HISTORY_MESSAGE_CHARS // 2
            message = message[:half] + "\n" + message[-half:]
        if message.strip() or files:
            commits.append((message.strip(), tuple(files[:HISTORY_MESSAGE_FILES])))
        if not files or len(files) > HISTORY_MAX_FILES_PER_COMMIT:
            continue
        churn.update(files)
        for a in files:
            for b in files:
                if a != b:
                    cochange[a][b] += 1
    return History(head, churn, cochange, commits)


def _read_gitignore(path: str) -> pathspec.GitIgnoreSpec | None:
    """A ``.gitignore``'s patterns; None if unreadable. A line git would not take either (a
    lone ``!``, a trailing backslash) is left out, as git leaves it out."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except ValueError:
        good = []
        for line in lines:
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
            except ValueError:
                continue
            good.append(line)
        return pathspec.GitIgnoreSpec.from_lines(good)


def folder_decision(spec: pathspec.GitIgnoreSpec, folder: str) -> bool | None:
    """Whether ``spec`` excludes the folder ``folder`` itself (True), takes it back (False),
    or says nothing of it (None): by its last pattern that matches the folder itself, not
    merely what the folder holds. ``x/`` and ``x`` match folder ``x``; ``x/**`` matches what
    ``x`` holds (its subfolders too) but not ``x``, so a later ``!`` can still take back a
    file directly in ``x``, as in git."""
    probe = folder + "/"
    decision = None
    for pattern in spec.patterns:
        if pattern.include is None or pattern.regex is None:
            continue
        m = pattern.regex.match(probe)
        if m is None:
            continue
        if "ps_d" in pattern.regex.groupindex:  # pathspec's mark of a match ending on a folder
            itself = m.group("ps_d") is not None and m.end("ps_d") == len(probe)
        else:  # "x/**", "*": a match of what a folder holds; a folder inside it is matched
            itself = m.end() < len(probe)
        if itself:
            decision = bool(pattern.include)
    return decision


def _ignored(rel: str, specs: list[tuple[str, pathspec.GitIgnoreSpec]]) -> bool:
    """Whether git ignores ``rel`` (a folder ends with ``/``) under ``specs``, the ``.gitignore``
    files of its folders from the root down: the deepest one with a matching pattern decides,
    and within it the last matching pattern. (A file's folders were decided before it.)"""
    for base, spec in reversed(specs):
        if rel.endswith("/"):
            decision = folder_decision(spec, rel[len(base):-1])
        else:
            decision = spec.check_file(rel[len(base):]).include
        if decision is not None:
            return bool(decision)
    return False


def _git_files(repo: str) -> list[str] | None:
    """The files git lists in the repository at ``repo``, or None if git cannot list them."""
    try:
        out = subprocess.run([*GIT, "-C", repo, "ls-files", "-co", "--exclude-standard", "-z"],
                             capture_output=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [p for p in out.decode("utf-8", "replace").split("\0") if p]
