"""Assembling a context answer within a byte budget. Runs in a worker thread."""

from __future__ import annotations

import bisect
import functools
import gc
import hashlib
import heapq
import itertools
import logging
import re
import subprocess
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import fsum
from pathlib import Path
from typing import Any

import orjson

from ..errors import TooLarge
from ..lru import LruCache
from ..records import iso_time
from .files import language_of
from .gitinfo import git_context
from .index import MEMO_WORDS, ProjectIndex
from .manifests import project_metadata
from .orientation import first_reads, newcomer_ranking
from .ranking import (
    DEFAULT_WEIGHTS,
    Signals,
    explain,
    named_in,
    query_terms,
    rank,
    task_identifiers,
)
from .scanner import ScanFailed, scan_in_child
from .secrets import SecretPolicy, Withheld, withheld_record

log = logging.getLogger("orchestra")

__all__ = ["ContextEngine", "MAX_BYTES", "MIN_BYTES", "DEFAULT_BYTES"]

DEFAULT_BYTES = 262_144
MIN_BYTES = 1024
MAX_BYTES = 4_194_304
MAX_RELEVANT = 50
#: commits read for the ranking's recency signal, and shown in the answer
RECENT_COMMITS = 50
ANSWER_COMMITS = 10
WINDOW_LINES = 12
#: the budget is shared out this many files at a time (the top ones all get a look)
SPREAD = 10
#: a file whose share of the budget is below this many bytes is listed, not inlined
MIN_WINDOW = 512
#: lines matching the task considered for windows in one file (the best by weight)
MAX_HITS = 200
#: matches of the task's words read in one file (beyond: the file's later matches are not seen)
MAX_MATCHES = 20_000
#: the cache of where the task's words start in the files windowed (ContextEngine._starts):
#: entries, and bytes of offsets (4 each; ContextLimits.search_cache_bytes)
STARTS_CACHE_ITEMS = 4096
STARTS_CACHE_BYTES = 4 << 20


def _array_bytes(found: array[int]) -> int:
    return found.itemsize * len(found) + 64


#: the share of ``max_bytes`` the project's listing (its paths and folders) may take; a longer
#: listing keeps the paths nearest the root (``listing_truncated``), so that the files that
#: matter get the budget (a 3,000-file listing is ~175 KB). ContextLimits.listing_share
LISTING_SHARE = 0.25
#: listings shortened to a share kept (one per budget asked; ContextEngine._listings)
LISTINGS_KEPT = 8


@dataclass(frozen=True)
class ContextLimits:
    """The bounds of a project's context engine that a deployment sets (``orchestra serve
    --context-listing-share``, ``--context-search-cache-bytes``, ``--context-word-tables``)."""

    #: the share of an answer's ``max_bytes`` the project's listing may take
    listing_share: float = LISTING_SHARE
    #: bytes of the offsets where task words start in the files answers window (0: none kept)
    search_cache_bytes: int = STARTS_CACHE_BYTES
    #: per-word ranking tables kept per index generation (ProjectIndex.word_memo)
    word_tables: int = MEMO_WORDS

    def __post_init__(self) -> None:
        if not 0 < self.listing_share <= 1 or self.search_cache_bytes < 0 or self.word_tables < 1:
            raise ValueError(f"context limits out of range: {self}")


#: the bounds when a deployment sets none
DEFAULT_LIMITS = ContextLimits()


def _listing_plan(paths: list[str]) -> tuple[int, list[int], list[int]]:
    """For a listing: its size as JSON, each path's place in the order nearest the root first
    (then as listed), and the JSON cost (string and comma) added up along that order."""
    order = sorted(range(len(paths)), key=lambda i: (paths[i].count("/"), i))
    place = [0] * len(paths)
    added, total = [], 0
    for n, i in enumerate(order):
        place[i] = n
        total += _size(paths[i]) + 1
        added.append(total)
    return _size(paths), place, added


def _shallow_first(paths: list[str], room: int, plan: tuple[int, list[int], list[int]]) -> list[str]:
    """The paths nearest the root (then in order) whose JSON list fits ``room`` bytes, in
    their order in ``paths`` (``plan``: :func:`_listing_plan` of ``paths``). A list of k
    strings is their sizes, k - 1 commas and two brackets: ``added[k - 1] + 1`` bytes."""
    _, place, added = plan
    fit = bisect.bisect_right(added, room - 1)
    return [p for p, n in zip(paths, place, strict=True) if n < fit]


def _shrink_skeleton(body: dict[str, Any], limit: int, strategies: list[str]) -> None:
    """The rest of the skeleton, least useful first, until it fits: uncommitted changes,
    directories, the declared dependencies, the agent profile's lists. (All are copies made
    for this answer.)"""
    ctx = body["context"]
    metadata = ctx["metadata"]
    lists = [
        (ctx["git_context"]["uncommitted_changes"], "git_history_shortened"),
        (ctx["project_structure"]["directories"], "structure_listing_shortened"),
        (metadata.get("dependencies"), "metadata_shortened"),
        *((value, "metadata_shortened") for value in metadata["agent_profile"].values()),
    ]
    for items, name in lists:
        if not isinstance(items, list):
            continue
        while items and _size(body) > limit:
            del items[len(items) // 2:]
            if name not in strategies:
                strategies.append(name)
        if _size(body) <= limit:
            return


def _settle_size(body: dict[str, Any]) -> None:
    """Set ``total_size_bytes`` to the size of the body stating it (its own digits count)."""
    while (size := _size(body)) != body["total_size_bytes"]:
        body["total_size_bytes"] = size


def cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` within ``max_bytes`` of UTF-8, never inside a character."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[: max(0, max_bytes)].decode("utf-8", "ignore")


def _size(obj: Any) -> int:
    return len(orjson.dumps(obj))


def windows(text: str, terms: set[str], budget: int, weights: dict[str, float] | None = None,
            defines: set[str] | None = None, starts_of: StartsOf | None = None) -> str:
    """The lines around the lines that mention ``terms``, within ``budget`` bytes of UTF-8.

    When not all of them fit, the best windows are kept, shown in file order: the lines that
    define an identifier of ``defines`` first, then the lines whose words weigh most (a
    word's weight from ``weights``, e.g. its idf; 1 each otherwise; a word counts where it
    appears in a line, also inside an identifier). The best ``MAX_HITS`` lines are
    considered. Windows are widened (twice as many lines each time) while the budget is less
    than half used, so a file with few matches shows more around them. No match: the head.
    """
    if not terms:  # the head (an answer with no task: no line split, no lowering)
        return cut_utf8(text, budget)
    weigh = weights or {}
    per_line: dict[int, set[str]] = {}
    low = text.lower()
    if len(low) == len(text) and all(terms):  # one search over the whole text
        per_line = _lines_matched(low, terms, starts_of)
        if not per_line:
            return cut_utf8(text, budget)
        lines = text.split("\n")
    else:  # lowering changed lengths (a few scripts): line by line
        lines = text.split("\n")
        find = _terms_pattern(frozenset(terms)).findall
        for i, text_line in enumerate(lines):
            found = find(text_line.lower())
            if found:
                per_line[i] = set(found)
    if not per_line:
        return cut_utf8(text, budget)
    get, one = weigh.get, itertools.repeat(1.0)
    # (-score, line): the best first, then file order, with no key to call
    # fsum: a line's score is the same whatever order its set of words comes in (a plain sum
    # over a set would follow the process's hash seed)
    ranked = [(-fsum(map(get, words, one)), i) for i, words in per_line.items()]
    if defines:
        ranked = [(score - 1000.0, i) if _DEFINES_LINE.match(lines[i]) and defines.intersection(
                      w.lower() for w in _NAME.findall(lines[i])) else (score, i) for score, i in ranked]
    hits = [(-score, i) for score, i in heapq.nsmallest(MAX_HITS, ranked)]
    # bytes before each line, newlines aside (line i starts at starts[i] + i)
    sizes = map(len, lines) if text.isascii() else map(len, map(str.encode, lines))
    starts = list(itertools.accumulate(sizes, initial=0))
    best = ""
    half = WINDOW_LINES // 2
    while True:
        out = _windowed(lines, starts, hits, half, budget)
        size = len(out.encode("utf-8"))
        if size > budget:
            break
        best = out
        if 2 * size > budget or 2 * half > len(lines):
            break
        half *= 2
    return best or cut_utf8(_windowed(lines, starts, hits, WINDOW_LINES // 2, budget), budget)


def _lines_matched(low: str, terms: set[str], starts_of: StartsOf | None = None) -> dict[int, set[str]]:
    """The terms each line holds, from the first ``MAX_MATCHES`` spans of ``_matches``."""
    per_line: dict[int, set[str]] = {}
    count = low.count
    line, last = 0, 0
    for start, end in _matches(low, terms, starts_of)[:MAX_MATCHES]:
        line += count("\n", last, start)
        last = start
        words = per_line.get(line)
        if words is None:
            per_line[line] = {low[start:end]}
        else:
            words.add(low[start:end])
    return per_line


def _matches(text: str, terms: set[str], starts_of: StartsOf | None = None) -> list[tuple[int, int]]:
    """The spans ``_terms_pattern(terms).finditer(text)`` gives (leftmost, then the longest
    term, not overlapping), found with ``str.find`` per term: a few times faster than the
    alternation's scan on large files (the excerpts' largest cost). ``terms`` not empty.
    ``starts_of(text, term)``, when given, says where ``term`` starts in ``text`` (e.g. from a
    cache); :func:`term_starts` otherwise."""
    longest: dict[int, int] = {}  # where a term starts: the longest term starting there
    get = longest.get
    for term in terms:
        size = len(term)
        for i in (starts_of or term_starts)(text, term):
            if get(i, 0) < size:
                longest[i] = size
    spans, end = [], 0
    for start in sorted(longest):
        if start >= end:
            end = start + longest[start]
            spans.append((start, end))
    return spans


#: where a term starts in a (lowered) text: (text, term) -> the offsets, ascending
StartsOf = Callable[[str, str], Sequence[int]]


def term_starts(text: str, term: str) -> list[int]:
    """Every offset where ``term`` starts in ``text``, overlaps included."""
    out = []
    find = text.find
    i = find(term)
    while i >= 0:
        out.append(i)
        i = find(term, i + 1)
    return out


@functools.lru_cache(maxsize=64)
def _terms_pattern(terms: frozenset[str]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(t) for t in sorted(terms, key=lambda t: (-len(t), t))))


def _windowed(lines: list[str], starts: list[int], hits: list[tuple[float, int]], half: int, budget: int) -> str:
    """The windows of ``half`` lines either side of the best ``hits`` that fit ``budget``
    (``starts``: the bytes before each line and the end, newlines not counted)."""
    chosen: list[tuple[int, int]] = []
    covered = bytearray(len(lines))  # 1: a chosen window holds the line
    used = 0
    for _score, i in hits:
        if covered[i]:
            continue
        lo, hi = max(0, i - half), min(len(lines), i + half + 1)
        size = starts[hi] + hi - starts[lo] - lo + 24
        if used + size > budget and chosen:
            continue
        chosen.append((lo, hi))
        covered[lo:hi] = b"\x01" * (hi - lo)
        used += size
        if used >= budget:
            break
    chosen.sort()
    merged: list[list[int]] = []
    for lo, hi in chosen:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    out, used = [], 0
    for lo, hi in merged:
        piece = f"... lines {lo + 1}-{hi} ...\n" + "\n".join(lines[lo:hi]) + "\n"
        size = len(piece.encode("utf-8"))
        if used + size > budget:
            out.append(cut_utf8(piece, budget - used))
            break
        out.append(piece)
        used += size
    return "".join(out)


_DEFINES_LINE = re.compile(r"^\s*(?:export\s+)?(?:pub(?:\([^)]*\))?\s+)?(?:public\s+|private\s+|protected\s+|static\s+|async\s+)*"
                           r"(?:def|class|func|fn|struct|enum|trait|type|interface|function|module|impl|const|let|var)\b")
_NAME = re.compile(r"[A-Za-z_]\w*")


def _json_len(text: str) -> int:
    """Bytes ``text`` takes as a JSON string (escapes included, quotes not)."""
    return len(orjson.dumps(text)) - 2


def _shares(sizes: list[int], budget: int) -> list[int]:
    """Water-filling: each size gets at most an equal share of ``budget``; what a small one
    leaves over goes to the larger ones."""
    shares = [0] * len(sizes)
    left, todo = budget, sorted(range(len(sizes)), key=sizes.__getitem__)
    for n, i in enumerate(todo):
        cap = left // (len(todo) - n)
        shares[i] = min(sizes[i], cap)
        left -= shares[i]
    return shares


def files_named_in_results(previous: list[dict[str, Any]], index: ProjectIndex) -> set[str]:
    """Files of the index that earlier results name, by path (``app/auth.py``, also as a
    trailing part of a longer path only at a folder boundary) or by unique-enough file name."""
    named: set[str] = set()
    for rec in previous:
        named |= named_in(orjson.dumps(rec.get("result", {})).decode(), index)
    return named


class ContextEngine:
    """One project root and its index. When to refresh is the context actor's decision."""

    def __init__(self, root: Path, scan_in_child: bool = True, withhold: tuple[str, ...] = (),
                 limits: ContextLimits = DEFAULT_LIMITS) -> None:
        self.root = root.resolve()
        self.limits = limits
        #: ``withhold``: patterns of files that may hold secrets, beyond the defaults (secrets.py)
        self.index = ProjectIndex(self.root, SecretPolicy(withhold), word_tables=limits.word_tables)
        self.index.derivers.append(first_reads)  # an answer with no task reads it at once
        #: read the first (cold) index in a child process (see scanner.py)
        self.cold_in_child = scan_in_child
        self._child: subprocess.Popen[bytes] | None = None
        self.stopped = False
        # git's answers change only when the index generation moves (files, HEAD, staging):
        # asked once per generation, not once per answer
        self._git: tuple[int, dict[str, Any]] | None = None
        #: the ranking's weights (bench/context_quality.py measures others)
        self.weights = DEFAULT_WEIGHTS
        # the words of the commits that touched each file: made on the index's thread when the
        # history moves, not by the next request
        self.index.derivers.append(self._history_words)
        # where the task's words start in the files answers window, by the content's digest
        # and word: a large file that many tasks name is searched once per word, not once
        # per answer (bounded: ContextLimits.search_cache_bytes)
        self._starts: LruCache[tuple[str, str], array[int]] = LruCache(
            STARTS_CACHE_ITEMS, max_bytes=limits.search_cache_bytes, size=_array_bytes)
        # the listing shortened to its share, per (index generation, share): answers with the
        # same budget share it (a few budgets kept; each list at most the whole listing)
        self._listings: LruCache[tuple[int, int], tuple[list[str], list[str]]] = LruCache(LISTINGS_KEPT)

    def _history_words(self, index: ProjectIndex) -> None:
        if self.weights.history or self.weights.similar:
            index.history_words(self.weights.history_title)

    def _git_context(self) -> dict[str, Any]:
        generation = self.index.generation
        if self._git is None or self._git[0] != generation:
            self._git = (generation, git_context(self.root, max_commits=RECENT_COMMITS))
        return self._git[1]

    def _metadata(self, paths: list[str]) -> dict[str, Any]:
        """The manifests' facts, read once per index generation; lists copied (the budget may
        shorten an answer's)."""
        found = self.index.memo("metadata", lambda: project_metadata(self.root, paths))
        return {key: list(value) if isinstance(value, list) else value for key, value in found.items()}

    def _started(self, child: subprocess.Popen[bytes]) -> None:
        self._child = child
        if self.stopped:
            child.kill()

    def stop(self) -> None:
        """From any thread: end a cold index being read by the child now (a server stopping
        must not wait for a large root to be read)."""
        self.stopped = True
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()

    def refresh(self) -> int:
        """Bring the index up to date now; the index generation after it."""
        index = self.index
        # A full index is a large set of long-lived objects; without gc.freeze(), Python's
        # full collections keep walking them, holding the GIL (a 32 ms pause of the event
        # loop during a cold index of 5,000 files; uncached answers' p99 92 -> 55-61 ms after
        # it). Objects alive then leave the collector's view; acyclic ones are still freed by
        # reference counting. Done per part of a cold index only, so its cost stays bounded.
        if index.generation == 0 and not index.files and self.cold_in_child:
            self.cold_in_child = False
            try:
                for part in scan_in_child(index.root, started=self._started, policy=index.scanner.policy):
                    index.apply(part, derive=False)
                    gc.freeze()
            except ScanFailed as exc:  # what arrived stays; the refresh below reads the rest
                if self.stopped:
                    return index.generation
                log.warning("context %s: reading in a child process failed (%s); reading here", self.root, exc)
            else:
                index.derive()
                gc.freeze()
                return index.generation
        cold = index.generation == 0
        index.refresh()
        if cold:
            gc.freeze()
        return self.index.generation

    def signals_for(self, issue_id: str, task: str, previous: list[dict[str, Any]],
                    signals: Signals, earlier: set[str] | None = None) -> Signals:
        """The request's signals with what the project knows added: files named by earlier
        results (``earlier`` when known) and by commits mentioning the issue, uncommitted
        changes, the files of the newest commits."""
        index = self.index
        if earlier is None:
            earlier = files_named_in_results(previous, index)
        mentioned = set(signals.mentioned) | earlier
        mentioned |= index.files_of_commits_mentioning(issue_id) & index.files.keys()
        git = self._git_context()
        uncommitted = {c["path"] for c in git["uncommitted_changes"]}
        recent = tuple(tuple(c["files"]) for c in git["recent_commits"])
        return Signals(task=task or issue_id, mentioned=frozenset(mentioned),
                       uncommitted=frozenset(uncommitted), globs=signals.globs,
                       keywords=signals.keywords, prefer_kind=signals.prefer_kind, recent=recent)

    def _starts_of(self, digest: str) -> StartsOf:
        """``starts_of`` for :func:`windows` over the content whose checksum is ``digest``."""
        cache = self._starts

        def starts_of(low: str, term: str) -> Sequence[int]:
            key = (digest, term)
            found = cache.get(key)
            if found is None:
                found = array("I" if len(low) <= 0xFFFF_FFFF else "q", term_starts(low, term))
                cache.put(key, found)
            return found
        return starts_of

    def _inline(self, records: list[tuple[dict[str, Any], str]], budget: int, signals: Signals,
                strategies: list[str]) -> int:
        """Fill the listed records' content within ``budget`` bytes (JSON-escaped), in rank
        order, ``SPREAD`` files at a time: each of them gets an equal share at most (water-
        filling: what a small file leaves goes to the larger ones), a file larger than its
        share shows windows around the task's words and the definitions it names. Files
        whose share is below ``MIN_WINDOW`` are not inlined. The number inlined."""
        index = self.index
        words = {t for t in query_terms(signals.task, (), self.weights) if len(t) > 2 and t in index.df}
        # words most files hold say little about where to look (and match everywhere)
        common = max(2, len(index.files) // 4)
        terms = {t for t in words if index.df[t] <= common} or words
        weights = {t: index.idf(t) for t in terms}
        idents = task_identifiers(signals.task)
        terms |= idents  # the names the task spells, whole
        weights.update(dict.fromkeys(idents, 5.0))
        count, start = 0, 0
        while start < len(records) and budget >= MIN_WINDOW:
            group = records[start:start + SPREAD]
            start += SPREAD
            sizes = [_json_len(text) for _, text in group]
            shares = _shares(sizes, budget)
            for (record, text), size, share in zip(group, sizes, shares, strict=True):
                if record.get("withheld"):
                    continue  # what may hold secrets is never inlined, whatever the budget
                if share < MIN_WINDOW and share < size:
                    continue
                # the content's own bytes: "inlined": true and "excerpt": true are a byte
                # shorter than the false forms the listed record was measured with
                if size <= share:
                    content = text
                else:
                    room = share
                    content = windows(text, terms, int(room * len(text.encode("utf-8")) / max(1, size)), weights, idents,
                                      self._starts_of(record["checksum"]))
                    while content and _json_len(content) > room:
                        content = cut_utf8(content, int(len(content.encode("utf-8")) * 0.9) - 16)
                    if not content:
                        continue
                    record["excerpt"] = True
                    if "large_files_windowed" not in strategies:
                        strategies.append("large_files_windowed")
                record["content"], record["inlined"] = content, True
                budget -= _json_len(content)
                count += 1
        if count < len(records) and "ranked_files_listed" not in strategies:
            strategies.append("ranked_files_listed")
        return count

    def build(
        self,
        issue_id: str,
        agent_type: str,
        task: str,
        max_bytes: int,
        previous: list[dict[str, Any]],
        signals: Signals,
        agent_profile: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        index = self.index
        paths, directories, total_size = index.listing()
        paths, directories = list(paths), list(directories)  # the answer may shorten its copies
        git = self._git_context()
        earlier = files_named_in_results(previous, index)
        sig = self.signals_for(issue_id, task, previous, signals, earlier)
        ranked = rank(index, sig, self.weights, limit=MAX_RELEVANT)
        if not task.strip():  # no task: what a newcomer opens first (orientation.py)
            ranked = newcomer_ranking(index, ranked, sig, MAX_RELEVANT)
        body: dict[str, Any] = {
            "issue_id": issue_id,
            "agent_type": agent_type,
            "context": {
                "project_structure": {
                    "root": str(self.root),
                    "files": paths,
                    "directories": directories,
                    "total_files": len(paths),
                    "total_size_bytes": total_size,
                },
                "relevant_files": [],
                "git_context": {  # copies: the budget may shorten them, the cache must not
                    "branch": git["branch"],
                    "recent_commits": git["recent_commits"][:ANSWER_COMMITS],
                    "uncommitted_changes": list(git["uncommitted_changes"]),
                },
                "previous_agent_outputs": previous,
                "metadata": {**self._metadata(paths), "agent_profile": agent_profile or {}},
            },
            "truncated": False,
            "truncation_strategy": None,
            "total_size_bytes": 0,
            "file_count": 0,
            "cache_hit": False,
            "timestamp": iso_time(time.time()),
        }
        limit = max_bytes - 64  # room for the figures filled in last
        strategies: list[str] = []
        ctx = body["context"]
        # 1. the listing takes at most its share; then the skeleton must fit: shorten the
        # listing, then history, then outputs
        structure = ctx["project_structure"]
        share = int(max_bytes * self.limits.listing_share)
        # the listing's sizes and order nearest the root, once per index generation
        paths_plan, folders_plan = index.memo("listing plan", lambda: (_listing_plan(paths), _listing_plan(directories)))
        if paths_plan[0] + folders_plan[0] > share:
            strategies.append("structure_listing_shortened")
            structure["listing_truncated"] = True
            # the same for every answer with this budget until the index moves (a few kept)
            listing_key = (index.generation, share)
            shortened = self._listings.get(listing_key)
            if shortened is None:
                folders = _shallow_first(directories, share // 4, folders_plan)
                shortened = (folders, _shallow_first(paths, share - _size(folders), paths_plan))
                self._listings.put(listing_key, shortened)
            structure["directories"] = directories = list(shortened[0])  # copies: the answer may
            structure["files"] = list(shortened[1])  # shorten them further
        if _size(body) > limit:
            if "structure_listing_shortened" not in strategies:
                strategies.append("structure_listing_shortened")
            ctx["project_structure"]["listing_truncated"] = True
            files = ctx["project_structure"]["files"]
            while files and _size(body) > limit:
                del files[len(files) // 2 :]
                ctx["project_structure"]["directories"] = ctx["project_structure"]["directories"][: len(files)]
        for key, name in (("recent_commits", "git_history_shortened"),):
            items = ctx["git_context"][key]
            while items and _size(body) > limit:
                items.pop()
                if name not in strategies:
                    strategies.append(name)
        outputs = ctx["previous_agent_outputs"]
        while outputs and _size(body) > limit:
            outputs.pop()  # oldest last: newest kept
            if "older_outputs_dropped" not in strategies:
                strategies.append("older_outputs_dropped")
        if _size(body) > limit:
            _shrink_skeleton(body, limit, strategies)
        # 2. files in rank order. Every ranked file is listed (path, facts, why); the budget
        # left is spread over the best ones' content (see _inline), and what it does not hold
        # follows, still in rank order, as "inlined": false with empty content. Sizes are added
        # up per record (each costs its own length and a comma): the body is serialised once.
        why = explain(index, sig, [path for _, path, _ in ranked], earlier, self.weights)
        used = _size(body)
        records: list[tuple[dict[str, Any], str]] = []
        for score, path, _named in ranked:
            entry = index.files[path]
            try:
                text = index.scanner.read_text(path)  # the only read of a file for an answer
            except Withheld:  # listed by its path and facts, never inlined (see _inline)
                withheld = withheld_record(entry.path, entry.size, iso_time(entry.mtime), entry.language,
                                           round(score, 3))
                size = _size(withheld) + 1
                if used + size > limit:
                    strategies.append("ranked_files_dropped")
                    break
                used += size
                records.append((withheld, ""))
                continue
            except OSError:
                continue
            record: dict[str, Any] = {
                "path": path, "content": "", "size": entry.size,
                "last_modified": iso_time(entry.mtime), "language": language_of(path),
                "checksum": "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest(),
                "relevance": round(score, 3), "inlined": False, "excerpt": False,
                "reason": why.get(path, ""),
            }
            size = _size(record) + 1
            if used + size > limit:
                strategies.append("ranked_files_dropped")
                break
            used += size
            records.append((record, text))
        inlined = self._inline(records, limit - used, sig, strategies)
        ctx["relevant_files"] = [r for r, _ in records if r["inlined"]] + [r for r, _ in records if not r["inlined"]]
        body["inlined_count"] = inlined
        body["file_count"] = len(ctx["relevant_files"])
        if strategies:
            body["truncated"] = True
            body["truncation_strategy"] = "+".join(strategies)
        _settle_size(body)
        files = ctx["relevant_files"]
        while body["total_size_bytes"] > max_bytes and files:
            # the figures filled in last (a long truncation_strategy) outgrew the room kept for
            # them: the last file gives the excess back (each byte cut shrinks the JSON by >= 1)
            last, excess = files[-1], body["total_size_bytes"] - max_bytes
            content = last["content"].encode("utf-8")
            if len(content) > excess + 64:
                last["content"] = cut_utf8(last["content"], len(content) - excess)
                last["excerpt"] = True
            else:
                files.pop()
                body["file_count"] = len(files)
            _settle_size(body)
        if body["total_size_bytes"] > max_bytes:
            # what cannot be shortened (the ids asked for, the root, the profile's names) is
            # larger than the budget: this budget cannot hold an answer
            raise TooLarge(
                "context.max_bytes", max_bytes,
                f"max_bytes {max_bytes} cannot hold the answer's fixed part "
                f"({body['total_size_bytes']} bytes); ask for more",
            )
        return body
