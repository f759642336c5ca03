"""A project's file index: the postings and statistics over the files a scan found.

Kept per file (see files.py): size, mtime, term frequencies (identifiers split), the
identifiers it defines and the modules it imports. Kept per project: an inverted index (term ->
files), document frequencies, a definitions index (identifier -> files), and from git history
the number of commits that touched each file and how often pairs of files changed together.
Finding and reading the files is the scanner's (scanning.py); this module only applies what
a scan found. Changed on one thread at a time (never on the event loop).
"""

from __future__ import annotations

import heapq
import math
import os
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import compress
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import pathspec

from ..lru import LruCache
from .files import FileEntry, fold_name, language_of, tokenize
from .scanning import (
    HISTORY_MAX_FILES_PER_COMMIT,
    YIELD_EVERY,
    ChangeSet,
    TreeScanner,
    folder_decision,
)
from .secrets import SecretPolicy

T = TypeVar("T")

__all__ = ["ChangeSet", "FileEntry", "ProjectIndex", "fold_name", "language_of", "tokenize"]

#: tables kept per index generation (ProjectIndex.memo): those whose keys the code fixes (a
#: few per agent type), and those of the words tasks ask about (ProjectIndex.word_memo: a few
#: per word, each as large as the word's postings; all of them together at most a few times
#: the index's postings)
MEMO_TABLES = 256
MEMO_WORDS = 512
#: holders of a name kept in a tuple (beyond, a set: adding to a tuple copies it)
_FEW = 8
#: the tables made from all files or all commits (at each derive, on the index's thread) give
#: the GIL up every this many files / commits, about a millisecond of work each (see YIELD_EVERY:
#: a thread holding the GIL makes the event loop's wait the switch interval, 5 ms, at every
#: system call)
_YIELD_FILES = 200
_YIELD_COMMITS = 20


class ProjectIndex:
    """Files of one root and the statistics over them. ``generation`` moves whenever a file,
    the git history or git's own state (HEAD, the staging index) changes.

    Not thread-safe: one thread at a time reads or changes it. Its scanner may run on another
    thread meanwhile, as it reads the files, not the index.
    """

    def __init__(self, root: Path, policy: SecretPolicy | None = None, word_tables: int = MEMO_WORDS) -> None:
        #: finds and reads the files; the index only applies what it found
        self.scanner = TreeScanner(root, policy)
        self.root = self.scanner.root
        self.is_git = self.scanner.is_git
        self.files: dict[str, FileEntry] = {}
        self.df: Counter[str] = Counter()
        self.postings: dict[str, dict[str, int]] = defaultdict(dict)
        self.path_postings: dict[str, set[str]] = defaultdict(set)
        #: identifier -> files defining it: a tuple while few (most names have one holder, and
        #: a set costs four times a 1-tuple), a set beyond (``__init__`` in a large project)
        self.definitions: dict[str, tuple[str, ...] | set[str]] = {}
        self.avg_len = 1.0
        self.generation = 0
        self._head: str | None = None
        self.churn: Counter[str] = Counter()
        self.cochange: dict[str, Counter[str]] = defaultdict(Counter)
        #: (message, files) of the last commits, newest first (see scanning.History)
        self.commits: list[tuple[str, tuple[str, ...]]] = []
        #: word with a digit (``123``, ``ISS``-less ``4``, ``v2``) -> the commits naming it, newest first
        self._numbered: dict[str, list[int]] = {}
        #: the words of the commit messages that touched each file (see history_words)
        self._history_words: dict[bool, HistoryWords] = {}
        #: tables derived from the files, per generation (see memo), and the per-word ones
        #: (see word_memo): apart, so that the words of many tasks never push out a table
        self._memo: LruCache[Any, Any] = LruCache(MEMO_TABLES)
        self._words: LruCache[Any, Any] = LruCache(word_tables)
        #: glob set -> its spec and its verdict on each path seen (see matching)
        self._verdicts: LruCache[tuple[str, ...], tuple[pathspec.GitIgnoreSpec, dict[str, bool]]] = LruCache(32)
        self._pending = False  # applied changes not yet derived (see apply)
        #: more tables to make at each derive (memoised by them), by the index's users
        self.derivers: list[Callable[[ProjectIndex], object]] = []
        self._git_state: tuple[float, float] | None = None

    # -- building and refreshing --

    def refresh(self) -> bool:
        """Bring the index up to date now (scan, then apply). True if anything changed."""
        return self.apply(self.scanner.scan(self.stat_snapshot(), self._head))

    @property
    def head(self) -> str | None:
        """The git commit the history figures were taken at."""
        return self._head

    def stat_snapshot(self) -> dict[str, tuple[float, int]]:
        """What the index knows of each file, for a :meth:`scan` on another thread."""
        return {path: (f.mtime, f.size) for path, f in self.files.items()}

    def apply(self, changes: ChangeSet, derive: bool = True) -> bool:
        """Take a scan's findings into the index. Quick: the reading was done by the scan.

        With ``derive=False`` the generation and the tables derived from all files wait for
        a later apply (a cold index arriving in parts: nobody reads the index meanwhile).
        """
        changed = bool(changes.entries or changes.removed or changes.history
                       or changes.git_stamp != self._git_state)
        self._git_state = changes.git_stamp
        self._pending = self._pending or changed
        for entry in _giving_gil(changes.entries, YIELD_EVERY):
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
            self._head, self.churn, self.cochange, self.commits = changes.history
            self._numbered = _numbered_words(self.commits)
            self._history_words = {}
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
        self._memo.clear()
        self._words.clear()
        # derived tables are made here, on the index's thread, not by the next request
        self.listing()
        self.by_name()
        self.components()
        self.norms(1.2, 0.75)
        for make in self.derivers:
            make(self)

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

    def files_of_commits_mentioning(self, needle: str, most: int = 20) -> set[str]:
        """Files of the newest ``most`` commits whose message names ``needle`` as a whole word
        (``#12`` is not named by a message about ``#123``, ``ISS-4`` not by one about
        ``ISS-42``), among the commits the index keeps. From memory: no git call per request."""
        found: set[str] = set()
        if not needle:
            return found
        word = re.compile(r"(?<![0-9A-Za-z_])" + re.escape(needle) + r"(?![0-9A-Za-z_])")
        # a word of the needle bounded by its ends or by other characters is a whole word of
        # every message naming it: those with a digit narrow the commits to look at
        numbered = [w for w in _WORD_RUN.findall(needle) if _DIGIT.search(w)]
        candidates: Sequence[int] = range(len(self.commits))
        if numbered:
            lists: list[list[int]] = [self._numbered.get(w, []) for w in numbered]
            candidates = min(lists, key=len)
        hits = 0
        for i in candidates:
            message, files = self.commits[i]
            if needle in message and word.search(message):  # the substring test first: quick
                found.update(files)
                hits += 1
                if hits >= most:
                    break
        return found

    def history_words(self, title_only: bool = False) -> HistoryWords:
        """The words of the commit messages that touched each file: what this repository's own
        history says a file is about. Made once per history (not per generation: the files
        changing does not change it)."""
        found = self._history_words.get(title_only)
        if found is None:
            found = self._history_words[title_only] = HistoryWords.of(self.commits, title_only)
        return found

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
        """``make()``, computed once per index generation and ``key``: a table whose keys the
        code fixes (the listing, the imports, an agent type's globs). ``MEMO_TABLES`` kept, the
        least recently used forgotten first; the words' tables are :meth:`word_memo`'s."""
        return _kept(self._memo, key, make)

    def word_memo(self, key: Any, make: Callable[[], T]) -> T:
        """As :meth:`memo`, for a table of one word a task asks about (its BM25 list, its
        path bonus): ``word_tables`` of them kept (``MEMO_WORDS`` unless told; the words
        asked over an index's life are many, so a long-lived index must forget some), apart
        from the other tables."""
        return _kept(self._words, key, make)

    def matching(self, globs: tuple[str, ...]) -> frozenset[str]:
        """Files that ``globs`` select, read the way git reads a ``.gitignore``: a pattern
        without a slash matches a name at any depth, ``/x`` is anchored at the root, ``**``
        spans folders (``**/*.py`` matches ``setup.py``), a folder's match selects all it
        holds (a later ``!`` cannot take a file of it back, as in git), ``!`` takes paths
        back out of earlier patterns."""
        def make() -> frozenset[str]:
            # a path's verdict depends on its path alone: kept across generations, so a new
            # generation asks pathspec about its new paths only (about 6 us a path: 30-80 ms
            # for the first answer of each agent type after every change, on 5,000-13,000 files)
            known = self._verdicts.get(globs)
            if known is None:
                known = (pathspec.GitIgnoreSpec.from_lines(globs), {})
                self._verdicts.put(globs, known)
            spec, verdicts = known
            files = self.files
            new = [p for p in files if p not in verdicts]
            if new:
                if len(verdicts) + len(new) > 2 * len(files) + 1000:  # paths gone since: forget them
                    verdicts = {p: v for p, v in verdicts.items() if p in files}
                    self._verdicts.put(globs, (spec, verdicts))
                chosen = _selected(spec, new)
                verdicts.update(dict.fromkeys(new, False))
                verdicts.update(dict.fromkeys(chosen, True))
            return frozenset(compress(files, map(verdicts.__getitem__, files)))
        return self.memo(("globs", globs), make)

    def components(self) -> dict[str, set[str]]:
        """Folder names and file stems, folded by :func:`fold_name` -> the paths under or named by
        them: what a task's "scope:" prefix or a phrase such as "active help" can name."""
        def make() -> dict[str, set[str]]:
            out: dict[str, set[str]] = defaultdict(set)
            for path in _giving_gil(self.files, _YIELD_FILES):
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


_WORD_RUN = re.compile(r"[0-9A-Za-z_]+")
_DIGIT = re.compile(r"[0-9]")


class HistoryWords:
    """Per file, the words of the messages of the commits that touched it (a commit of at most
    HISTORY_MAX_FILES_PER_COMMIT files; each word counted once per commit): postings for a
    BM25 over these "history documents". And per commit, its words and files: the past
    changes whose messages are most like a task (:meth:`similar`)."""

    __slots__ = ("avg_len", "commit_avg", "commit_files", "commit_lengths", "commit_postings", "commit_titles",
                 "lengths", "postings")

    def __init__(self) -> None:
        self.postings: dict[str, dict[str, int]] = defaultdict(dict)
        self.lengths: Counter[str] = Counter()
        self.avg_len = 1.0
        self.commit_postings: dict[str, list[int]] = defaultdict(list)
        self.commit_files: list[tuple[str, ...]] = []
        self.commit_lengths: list[int] = []
        self.commit_titles: list[str] = []
        self.commit_avg = 1.0

    @classmethod
    def of(cls, commits: Iterable[tuple[str, tuple[str, ...]]], title_only: bool = False) -> HistoryWords:
        """From (message, files) of commits; ``title_only``: the messages' first lines alone."""
        out = cls()
        postings, lengths = out.postings, out.lengths
        commit_postings = out.commit_postings
        for message, files in _giving_gil(commits, _YIELD_COMMITS):
            if not files or len(files) > HISTORY_MAX_FILES_PER_COMMIT:
                continue
            title = message.split("\n", 1)[0]
            words = set(tokenize(title if title_only else message))
            number = len(out.commit_files)
            out.commit_files.append(files)
            out.commit_titles.append(title[:100])
            out.commit_lengths.append(len(words))
            for word in words:
                holders = postings[word]
                for path in files:
                    holders[path] = holders.get(path, 0) + 1
                commit_postings[word].append(number)
            for path in files:
                lengths[path] += len(words)
        out.postings = dict(postings)
        out.commit_postings = dict(commit_postings)
        out.avg_len = sum(lengths.values()) / len(lengths) if lengths else 1.0
        out.commit_avg = sum(out.commit_lengths) / len(out.commit_lengths) if out.commit_lengths else 1.0
        return out

    def scores(self, terms: dict[str, float], k1: float = 1.2, b: float = 0.75) -> dict[str, float]:
        """BM25 of ``terms`` (word -> weight) over the files' history documents."""
        n = len(self.lengths)
        out: dict[str, float] = {}
        get = out.get
        avg, lengths = self.avg_len, self.lengths
        for term, weight in terms.items():
            holders = self.postings.get(term)
            if not holders:
                continue
            idf = weight * math.log(1 + (n - len(holders) + 0.5) / (len(holders) + 0.5))
            for path, tf in holders.items():
                out[path] = get(path, 0.0) + idf * (k1 + 1) * tf / (tf + k1 * (1 - b + b * lengths[path] / avg))
        return out

    def similar(self, terms: dict[str, float], most: int = 10) -> dict[str, float]:
        """The files of the ``most`` past commits whose messages are most like ``terms`` (BM25
        over the commits' messages): each file gets its commit's score / the commit's files."""
        out: dict[str, float] = defaultdict(float)
        for c, score in self.similar_commits(terms, most):
            files = self.commit_files[c]
            for path in files:
                out[path] += score / len(files)
        return out

    def similar_commits(self, terms: dict[str, float], most: int = 10, k1: float = 1.2,
                        b: float = 0.75) -> list[tuple[int, float]]:
        """(number, score) of the ``most`` commits whose messages are most like ``terms``, best
        first (BM25 over the commits' messages)."""
        n = len(self.commit_files)
        found: dict[int, float] = {}
        get = found.get
        avg, lengths = self.commit_avg, self.commit_lengths
        for term, weight in terms.items():
            holders = self.commit_postings.get(term)
            if not holders:
                continue
            idf = weight * math.log(1 + (n - len(holders) + 0.5) / (len(holders) + 0.5))
            for c in holders:  # a word counts once per commit: tf 1
                found[c] = get(c, 0.0) + idf * (k1 + 1) / (1 + k1 * (1 - b + b * lengths[c] / avg))
        return heapq.nlargest(most, found.items(), key=itemgetter(1))


def _kept(cache: LruCache[Any, Any], key: Any, make: Callable[[], T]) -> T:
    """``cache``'s value for ``key``, made by ``make()`` and kept when missing."""
    value = cache.get(key)
    if value is None:
        value = make()
        cache.put(key, value)
    return value


def _giving_gil(items: Iterable[T], every: int) -> Iterator[T]:
    """``items``, the GIL given up before the first and every ``every``-th after it: a table
    made from all files or commits on the index's thread must not keep the event loop's
    thread waiting (see YIELD_EVERY)."""
    for n, item in enumerate(items):
        if n % every == 0:
            time.sleep(0)
        yield item


def _numbered_words(commits: list[tuple[str, tuple[str, ...]]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for i, (message, _) in enumerate(_giving_gil(commits, 4 * _YIELD_COMMITS)):
        for w in set(_WORD_RUN.findall(message)):
            if _DIGIT.search(w):
                out[w].append(i)
    return dict(out)


def _selected(spec: pathspec.GitIgnoreSpec, paths: Iterable[str]) -> frozenset[str]:
    """The paths ``spec`` selects as git would ignore them: by a match of the path itself, or
    of any folder above it (see :func:`~.scanning.folder_decision`)."""
    folders: dict[str, bool] = {"": False}

    def folder_selected(folder: str) -> bool:
        found = folders.get(folder)
        if found is None:
            found = folders[folder] = (folder_selected(folder.rpartition("/")[0])
                                       or bool(folder_decision(spec, folder)))
        return found

    return frozenset(p for p in paths
                     if folder_selected(p.rpartition("/")[0]) or spec.check_file(p).include)


def _resolve_imports(files: dict[str, FileEntry]) -> dict[str, set[str]]:
    by_module: dict[str, str] = {}
    by_dir: dict[str, list[str]] = defaultdict(list)
    for path in _giving_gil(files, _YIELD_FILES):
        stem, _ = os.path.splitext(path)
        parts = stem.split("/")
        if parts[-1] in ("__init__", "index", "mod"):
            parts = parts[:-1]
        for i in range(len(parts)):
            by_module.setdefault(".".join(parts[i:]), path)
        by_dir[path.rsplit("/", 1)[0] if "/" in path else ""].append(path)
    by_tail: dict[str, list[str]] = defaultdict(list)  # a folder's last name -> folders, in order
    for d in by_dir:
        by_tail[d.rsplit("/", 1)[-1]].append(d)
    out: dict[str, set[str]] = defaultdict(set)
    for path, entry in _giving_gil(files.items(), _YIELD_FILES):
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
                    dirs = by_tail.get(imp.rsplit("/", 1)[-1])
                    if dirs:
                        targets = by_dir[dirs[0]]
            for t in targets:
                if t != path:
                    out[t].add(path)
    return out
