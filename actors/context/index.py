"""A project's file index: which files exist, what they say, tokenised for ranking.

Built and refreshed in a worker thread (never on the event loop). Nothing outside the root is
read: paths are resolved and must stay under it; symlinks leading out are skipped.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FileEntry", "ProjectIndex", "tokenize", "language_of"]

MAX_INDEXED_BYTES = 512 * 1024
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", "dist", "build", "target",
             ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", "vendor", ".idea", ".vscode"}
_LANG = {
    ".py": "python", ".go": "go", ".rs": "rust", ".js": "javascript", ".ts": "typescript",
    ".tsx": "typescript", ".jsx": "javascript", ".java": "java", ".kt": "kotlin", ".c": "c",
    ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp", ".rb": "ruby", ".php": "php",
    ".cs": "csharp", ".swift": "swift", ".scala": "scala", ".sh": "shell", ".md": "markdown",
    ".rst": "rst", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json",
    ".html": "html", ".css": "css", ".sql": "sql", ".txt": "text",
}
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*|[0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def language_of(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if name in ("Dockerfile", "Makefile", "justfile"):
        return name.lower()
    return _LANG.get(os.path.splitext(name)[1].lower(), "other")


def tokenize(text: str) -> list[str]:
    """Words, with identifiers split: ``parseHTTPRequest_v2`` -> parse http request v2 (and whole)."""
    out: list[str] = []
    for word in _WORD.findall(text):
        low = word.lower()
        if len(low) > 1:
            out.append(low)
        parts = _CAMEL.findall(word)
        if len(parts) > 1:
            out.extend(p.lower() for p in parts if len(p) > 1)
    return out


@dataclass(slots=True)
class FileEntry:
    path: str
    size: int
    mtime: float
    binary: bool = False
    terms: Counter[str] = field(default_factory=Counter)
    path_terms: frozenset[str] = frozenset()
    length: int = 0


class ProjectIndex:
    """Files of one root and BM25 statistics over them. Not thread-safe: one owner at a time."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.files: dict[str, FileEntry] = {}
        self.df: Counter[str] = Counter()
        self.avg_len = 1.0
        self.generation = 0
        self.is_git = (self.root / ".git").exists()

    # -- listing --

    def list_paths(self) -> list[str]:
        if self.is_git:
            try:
                out = subprocess.run(
                    ["git", "-C", str(self.root), "ls-files", "-co", "--exclude-standard", "-z"],
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
        """Bring the index up to date (stat sweep; re-read only changed files). True if changed."""
        seen = set()
        changed = False
        for rel in self.list_paths():
            full = self.safe_path(rel)
            if full is None:
                continue
            try:
                st = full.stat()
            except OSError:
                continue
            if not full.is_file():
                continue
            seen.add(rel)
            old = self.files.get(rel)
            if old is not None and old.mtime == st.st_mtime and old.size == st.st_size:
                continue
            if old is not None:
                self.df.subtract(set(old.terms))
            self.files[rel] = self._read(rel, full, st.st_size, st.st_mtime)
            self.df.update(set(self.files[rel].terms))
            changed = True
        for rel in [r for r in self.files if r not in seen]:
            self.df.subtract(set(self.files.pop(rel).terms))
            changed = True
        if changed:
            self.generation += 1
            lengths = [f.length for f in self.files.values() if f.length]
            self.avg_len = sum(lengths) / len(lengths) if lengths else 1.0
            self.df = +self.df
        return changed

    def _read(self, rel: str, full: Path, size: int, mtime: float) -> FileEntry:
        entry = FileEntry(rel, size, mtime, path_terms=frozenset(tokenize(rel)))
        if size > MAX_INDEXED_BYTES:
            return entry
        try:
            data = full.read_bytes()
        except OSError:
            return entry
        if b"\0" in data[:8192]:
            entry.binary = True
            return entry
        terms = tokenize(data.decode("utf-8", "replace"))
        entry.terms = Counter(terms)
        entry.length = len(terms)
        return entry

    def idf(self, term: str) -> float:
        n = len(self.files) or 1
        df = self.df.get(term, 0)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))


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
