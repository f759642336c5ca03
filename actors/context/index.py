"""A project's file index: which files exist, what they say, how they relate.

Built and refreshed in a worker thread (never on the event loop). Nothing outside the root is
read: paths are resolved and must stay under it; symlinks leading out are skipped.

Kept per file: size, mtime, term frequencies (identifiers split), the identifiers it defines
and the modules it imports. Kept per project: an inverted index (term -> files), document
frequencies, a definitions index (identifier -> files), and from git history the number of
commits that touched each file and how often pairs of files changed together.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import stat
import subprocess
import sys
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .gitinfo import GIT

T = TypeVar("T")

__all__ = ["ChangeSet", "FileEntry", "ProjectIndex", "tokenize", "language_of"]

MAX_INDEXED_BYTES = 512 * 1024
HISTORY_COMMITS = 2000
#: Indexing runs on worker threads in pure-Python loops that would hold the GIL for long
#: stretches, making the event loop's thread wait up to the switch interval (5 ms) at every
#: system call. Giving the GIL up every few files keeps the loop's latency low meanwhile.
_YIELD_EVERY = 10
#: holders of a name kept in a tuple (beyond, a set: adding to a tuple copies it)
_FEW = 8
HISTORY_MAX_FILES_PER_COMMIT = 30  # bulk commits (renames, formatting) say little about coupling
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", "dist", "build", "target",
             ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", "vendor", ".idea", ".vscode"}
_LANG = {
    ".py": "python", ".go": "go", ".rs": "rust", ".js": "javascript", ".mjs": "javascript",
    ".cjs": "javascript", ".ts": "typescript", ".tsx": "typescript", ".jsx": "javascript",
    ".java": "java", ".kt": "kotlin", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
    ".hpp": "cpp", ".rb": "ruby", ".php": "php", ".cs": "csharp", ".swift": "swift",
    ".scala": "scala", ".sh": "shell", ".md": "markdown", ".rst": "rst", ".toml": "toml",
    ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".html": "html", ".css": "css",
    ".sql": "sql", ".txt": "text",
}
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*|[0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_DEFS = {
    "python": re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", re.M),
    "go": re.compile(r"^(?:func(?:\s*\([^)]*\))?|type)\s+([A-Za-z_]\w*)", re.M),
    "rust": re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:fn|struct|enum|trait|type|mod|macro_rules!)\s+([A-Za-z_]\w*)", re.M),
    "javascript": re.compile(r"(?:function\s+([A-Za-z_$][\w$]*)|class\s+([A-Za-z_$][\w$]*)|(?:^|\n)\s*(?:exports\.|module\.exports\.)?([A-Za-z_$][\w$]*)\s*=\s*function|(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=\s*(?:async\s*)?\()"),
    "typescript": re.compile(r"(?:function\s+([A-Za-z_$][\w$]*)|class\s+([A-Za-z_$][\w$]*)|interface\s+([A-Za-z_$][\w$]*)|(?:const|let)\s+([A-Za-z_$][\w$]*)\s*=\s*(?:async\s*)?\()"),
    "java": re.compile(r"(?:class|interface|enum)\s+([A-Za-z_]\w*)|\b(?:public|private|protected|static)[\w<>\[\]\s]+\s([a-z]\w*)\s*\("),
}
_IMPORTS = {
    "python": re.compile(r"^\s*(?:from\s+([.\w]+)\s+import|import\s+([\w.]+))", re.M),
    "javascript": re.compile(r"""(?:require\(\s*['"]([^'"]+)['"]\s*\)|from\s+['"]([^'"]+)['"]|import\s+['"]([^'"]+)['"])"""),
    "typescript": re.compile(r"""(?:require\(\s*['"]([^'"]+)['"]\s*\)|from\s+['"]([^'"]+)['"]|import\s+['"]([^'"]+)['"])"""),
    "go": re.compile(r'^\s*(?:import\s+)?(?:\w+\s+)?"([^"]+)"\s*$', re.M),
    "rust": re.compile(r"^\s*(?:pub\s+)?(?:mod\s+(\w+)\s*;|use\s+(?:crate|super|self)::([\w:]+))", re.M),
}


def language_of(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if name in ("Dockerfile", "Makefile", "justfile"):
        return name.lower()
    return _LANG.get(os.path.splitext(name)[1].lower(), "other")


def tokenize(text: str) -> list[str]:
    """Words, with identifiers split: ``parseHTTPRequest_v2`` -> parse http request v2 (and whole)."""
    out: list[str] = []
    append = out.append
    for word in _WORD.findall(text):
        low = word.lower()
        if len(low) > 1:
            append(low)
        if low == word or word.isupper():
            continue  # nothing to split: most words
        parts = _CAMEL.findall(word)
        if len(parts) > 1:
            out.extend(p.lower() for p in parts if len(p) > 1)
    return out


def fold_name(name: str) -> str:
    """``_bash_complete`` / ``bash-complete`` / ``BashComplete`` -> ``bashcomplete``."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


@dataclass(slots=True)
class FileEntry:
    path: str
    size: int
    mtime: float
    binary: bool = False
    #: the distinct words of the file (their counts live in the index's postings)
    terms: tuple[str, ...] = ()
    #: word counts, from a scan to the index: dropped once the index holds them
    counts: dict[str, int] | None = None
    path_terms: tuple[str, ...] = ()  # distinct words of the path
    length: int = 0
    defines: tuple[str, ...] = ()  # distinct identifiers, in order of definition
    imports: tuple[str, ...] = ()
    language: str = "other"
    kind: str = "other"  # source, test, doc, config or other (see ranking.file_kind)


@dataclass(slots=True)
class ChangeSet:
    """What a scan found: files new or changed (already read), files gone, new history."""

    entries: list[FileEntry]
    removed: list[str]
    history: tuple[str, Counter[str], dict[str, Counter[str]]] | None
    #: git's own state when scanned (HEAD and index file times); None outside git
    git_stamp: tuple[float, float] | None = None


class ProjectIndex:
    """Files of one root and the statistics over them. ``generation`` moves whenever a file,
    the git history or git's own state (HEAD, the staging index) changes.

    Not thread-safe: one thread at a time reads or changes it. Only :meth:`scan` may run
    on another thread meanwhile, as it reads the files, not the index.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.files: dict[str, FileEntry] = {}
        self.df: Counter[str] = Counter()
        self.postings: dict[str, dict[str, int]] = defaultdict(dict)
        self.path_postings: dict[str, set[str]] = defaultdict(set)
        #: identifier -> files defining it: a tuple while few (most names have one holder, and
        #: a set costs four times a 1-tuple), a set beyond (``__init__`` in a large project)
        self.definitions: dict[str, tuple[str, ...] | set[str]] = {}
        self.avg_len = 1.0
        self.generation = 0
        self.is_git = (self.root / ".git").exists()
        self._head: str | None = None
        self.churn: Counter[str] = Counter()
        self.cochange: dict[str, Counter[str]] = defaultdict(Counter)
        #: tables derived from the files, per generation (see memo)
        self._memo: OrderedDict[Any, Any] = OrderedDict()
        self._pending = False  # applied changes not yet derived (see apply)
        self._git_state: tuple[float, float] | None = None

    # -- listing --

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
        ignores = self._gitignore()
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not _ignored(rel_dir + d, ignores, True)]
            for name in filenames:
                rel = rel_dir + name
                if not _ignored(rel, ignores, False):
                    out.append(rel)
        return sorted(out)

    def _gitignore(self) -> list[str]:
        try:
            lines = (self.root / ".gitignore").read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#") and not ln.startswith("!")]

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

    # -- building and refreshing --

    def refresh(self) -> bool:
        """Bring the index up to date now (scan, then apply). True if anything changed."""
        return self.apply(self.scan(self.stat_snapshot(), self._head))

    @property
    def head(self) -> str | None:
        """The git commit the history figures were taken at."""
        return self._head

    def stat_snapshot(self) -> dict[str, tuple[float, int]]:
        """What the index knows of each file, for a :meth:`scan` on another thread."""
        return {path: (f.mtime, f.size) for path, f in self.files.items()}

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
            yield self._read(rel, st.st_size, st.st_mtime)
            read += 1
            if read % _YIELD_EVERY == 0:
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
        ignored = self._ignored_by_git(list(present)) if self.is_git else set()
        for rel, st in present.items():
            if rel not in ignored:
                entries.append(self._read(rel, st.st_size, st.st_mtime))
                if len(entries) % _YIELD_EVERY == 0:
                    time.sleep(0)  # a large batch (a branch switch) must not starve the loop
        return ChangeSet(entries, removed, self.read_history(head), self.git_stamp())

    def _ignored_by_git(self, paths: list[str]) -> set[str]:
        """Which of ``paths`` git ignores, in one call for the whole batch."""
        if not paths:
            return set()
        try:
            out = subprocess.run(
                [*GIT, "-C", str(self.root), "check-ignore", "-z", "--stdin"],
                input="\0".join(paths).encode() + b"\0", capture_output=True, timeout=30,
            )
        except (OSError, subprocess.SubprocessError):
            return set()
        return {p for p in out.stdout.decode("utf-8", "replace").split("\0") if p}

    def apply(self, changes: ChangeSet, derive: bool = True) -> bool:
        """Take a scan's findings into the index. Quick: the reading was done by the scan.

        With ``derive=False`` the generation and the tables derived from all files wait for
        a later apply (a cold index arriving in parts: nobody reads the index meanwhile).
        """
        changed = bool(changes.entries or changes.removed or changes.history
                       or changes.git_stamp != self._git_state)
        self._git_state = changes.git_stamp
        self._pending = self._pending or changed
        for i, entry in enumerate(changes.entries):
            if i % _YIELD_EVERY == 0:
                time.sleep(0)  # let the event loop's thread have the GIL (see _YIELD_EVERY)
            old = self.files.get(entry.path)
            if old is not None:
                self._forget(old)
            self.files[entry.path] = entry
            self._remember(entry)
        for rel in changes.removed:
            old = self.files.pop(rel, None)
            if old is not None:
                self._forget(old)
        if changes.history is not None:
            self._head, self.churn, self.cochange = changes.history
        if derive:
            self.derive()
        return changed

    def derive(self) -> None:
        """After changes: move the generation, and remake the tables derived from all files."""
        if not self._pending:
            return
        self._pending = False
        self.generation += 1
        lengths = [f.length for f in self.files.values() if f.length]
        self.avg_len = sum(lengths) / len(lengths) if lengths else 1.0
        self._memo = OrderedDict()
        # derived tables are made here, on the index's thread, not by the next request
        self.listing()
        self.by_name()
        self.components()
        self.norms(1.2, 0.75)

    def _remember(self, entry: FileEntry) -> None:
        if entry.counts is not None:
            # one string per distinct word for the whole index, not one per file holding it
            entry.terms = tuple(map(sys.intern, entry.counts))
            postings, path = self.postings, entry.path
            for term, tf in zip(entry.terms, entry.counts.values(), strict=True):
                postings[term][path] = tf
            entry.counts = None
        for term in entry.path_terms:
            self.path_postings[term].add(entry.path)
        self.df.update(entry.terms)
        definitions = self.definitions
        for name in entry.defines:
            holders = definitions.get(name, ())
            if isinstance(holders, set):
                holders.add(entry.path)
            elif len(holders) < _FEW:
                definitions[name] = (*holders, entry.path)
            else:
                definitions[name] = {*holders, entry.path}

    def _forget(self, entry: FileEntry) -> None:
        for term in entry.path_terms:
            holders = self.path_postings.get(term)
            if holders is not None:
                holders.discard(entry.path)
                if not holders:
                    del self.path_postings[term]
        for term in entry.terms:
            bucket = self.postings.get(term)
            if bucket is not None:
                bucket.pop(entry.path, None)
                if not bucket:
                    del self.postings[term]
            self.df[term] -= 1
            if self.df[term] <= 0:
                del self.df[term]
        for name in entry.defines:
            paths = self.definitions.get(name)
            if isinstance(paths, set):
                paths.discard(entry.path)
                if not paths:
                    del self.definitions[name]
            elif paths is not None:
                rest = tuple(p for p in paths if p != entry.path)
                if rest:
                    self.definitions[name] = rest
                else:
                    del self.definitions[name]

    def _read(self, rel: str, size: int, mtime: float) -> FileEntry:
        from .ranking import file_kind  # the kind rules live with the ranking

        language = language_of(rel)
        entry = FileEntry(rel, size, mtime, path_terms=tuple(dict.fromkeys(map(sys.intern, tokenize(rel)))),
                          language=language, kind=file_kind(rel, language))
        if size > MAX_INDEXED_BYTES:
            return entry
        try:
            with open(os.path.join(self.root, rel), "rb") as f:
                data = f.read()
        except OSError:
            return entry
        if b"\0" in data[:8192]:
            entry.binary = True
            return entry
        text = data.decode("utf-8", "replace")
        terms = tokenize(text)
        entry.counts = Counter(terms)
        entry.length = len(terms)
        lang = language
        defs = _DEFS.get(lang)
        if defs is not None:
            entry.defines = tuple(dict.fromkeys(
                sys.intern(next(g for g in m.groups() if g).lower()) for m in defs.finditer(text) if any(m.groups())
            ))
        imports = _IMPORTS.get(lang)
        if imports is not None:
            entry.imports = tuple(
                next(g for g in m.groups() if g) for m in imports.finditer(text) if any(m.groups())
            )
        return entry

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

    def read_history(self, known_head: str | None) -> tuple[str, Counter[str], dict[str, Counter[str]]] | None:
        """Churn and co-change from the last commits, or None when HEAD has not moved."""
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
                 "--name-only", "--format=%x1e"],
                capture_output=True, timeout=60,
            ).stdout.decode("utf-8", "replace")
        except (OSError, subprocess.SubprocessError):
            return None
        churn: Counter[str] = Counter()
        cochange: dict[str, Counter[str]] = defaultdict(Counter)
        for block in log.split("\x1e"):
            files = [f for f in block.split("\n") if f]
            if not files or len(files) > HISTORY_MAX_FILES_PER_COMMIT:
                continue
            churn.update(files)
            for a in files:
                for b in files:
                    if a != b:
                        cochange[a][b] += 1
        return head, churn, cochange

    # -- statistics --

    def idf(self, term: str) -> float:
        n = len(self.files) or 1
        df = self.df.get(term, 0)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def norms(self, k1: float, b: float) -> dict[str, float]:
        """BM25's length normalisation of every file."""
        avg = self.avg_len
        return self.memo(("norms", k1, b),
                         lambda: {p: k1 * (1 - b + b * f.length / avg) for p, f in self.files.items()})

    def listing(self) -> tuple[list[str], list[str], int]:
        """Sorted files and directories (relative paths) and the total size. Every directory is
        listed, also one that holds only directories."""
        def make() -> tuple[list[str], list[str], int]:
            paths = sorted(self.files)
            dirs: set[str] = set()
            for p in paths:
                parent = p.rpartition("/")[0]
                while parent and parent not in dirs:  # ancestors of a known one are known
                    dirs.add(parent)
                    parent = parent.rpartition("/")[0]
            return paths, sorted(dirs), sum(f.size for f in self.files.values())
        return self.memo("listing", make)

    def by_name(self) -> dict[str, list[str]]:
        """File name -> paths with that name."""
        def make() -> dict[str, list[str]]:
            names: dict[str, list[str]] = defaultdict(list)
            for path in self.files:
                names[path.rsplit("/", 1)[-1]].append(path)
            return dict(names)
        return self.memo("by_name", make)

    def memo(self, key: Any, make: Callable[[], T]) -> T:
        """``make()``, computed once per index generation and ``key``. The 512 most recently
        used are kept (one per task word asked, so a long-lived index must forget some)."""
        memo = self._memo
        try:
            memo.move_to_end(key)
            return memo[key]  # type: ignore[no-any-return]
        except KeyError:
            value = memo[key] = make()
            if len(memo) > 512:
                memo.popitem(last=False)
            return value

    def matching(self, globs: tuple[str, ...]) -> frozenset[str]:
        """Files whose path or name matches any of ``globs`` (fnmatch rules)."""
        def make() -> frozenset[str]:
            match = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)).match
            return frozenset(p for p in self.files if match(p) or match(p.rsplit("/", 1)[-1]))
        return self.memo(("globs", globs), make)

    def components(self) -> dict[str, set[str]]:
        """Folder names and file stems, folded by :func:`fold_name` -> the paths under or named by
        them: what a task's "scope:" prefix or a phrase such as "active help" can name."""
        def make() -> dict[str, set[str]]:
            out: dict[str, set[str]] = defaultdict(set)
            for path in self.files:
                parts = path.split("/")
                parts[-1] = parts[-1].split(".", 1)[0]
                for part in parts:
                    key = fold_name(part)
                    if key:
                        out[key].add(path)
            return dict(out)
        return self.memo("components", make)

    def imported_by(self) -> dict[str, set[str]]:
        """File -> files that import it (resolved heuristically by module path)."""
        return self.memo("imported_by", lambda: _resolve_imports(self.files))


def _resolve_imports(files: dict[str, FileEntry]) -> dict[str, set[str]]:
    by_module: dict[str, str] = {}
    by_dir: dict[str, list[str]] = defaultdict(list)
    for path in files:
        stem, _ = os.path.splitext(path)
        parts = stem.split("/")
        if parts[-1] in ("__init__", "index", "mod"):
            parts = parts[:-1]
        for i in range(len(parts)):
            by_module.setdefault(".".join(parts[i:]), path)
        by_dir[path.rsplit("/", 1)[0] if "/" in path else ""].append(path)
    out: dict[str, set[str]] = defaultdict(set)
    for path, entry in files.items():
        base = path.rsplit("/", 1)[0] if "/" in path else ""
        for imp in entry.imports:
            targets: list[str] = []
            if imp.startswith("."):  # relative: JS './x', '../y' or Python '.mod'
                if "/" in imp or imp in (".", ".."):
                    joined = os.path.normpath(os.path.join(base, imp)).lstrip("./")
                    for cand in (joined, *(joined + ext for ext in (".js", ".ts", ".mjs", ".cjs", "/index.js", "/index.ts"))):
                        if cand in files:
                            targets = [cand]
                            break
                else:
                    mod = imp.lstrip(".")
                    target = by_module.get(mod.replace("::", ".")) if mod else None
                    targets = [target] if target else []
            else:
                key = imp.replace("::", ".").replace("/", ".")
                target = by_module.get(key)
                if target is None and "." in key:  # `pkg.mod.name` imported as a name
                    target = by_module.get(key.rsplit(".", 1)[0])
                if target is not None:
                    targets = [target]
                else:  # Go: an import path whose tail is a directory of the project
                    tail = imp.rsplit("/", 1)[-1]
                    for d, members in by_dir.items():
                        if d == tail or d.endswith("/" + tail):
                            targets = members
                            break
            for t in targets:
                if t != path:
                    out[t].add(path)
    return out


def _ignored(rel: str, patterns: list[str], is_dir: bool) -> bool:
    name = rel.rsplit("/", 1)[-1]
    for pat in patterns:
        dir_only = pat.endswith("/")
        p = pat.rstrip("/")
        if dir_only and not is_dir:
            # a file under an ignored directory is caught when the directory is pruned
            continue
        if "/" in p.lstrip("/"):
            if fnmatch.fnmatch(rel, p.lstrip("/")):
                return True
        elif fnmatch.fnmatch(name, p):
            return True
    return False
