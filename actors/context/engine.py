"""Assembling a context answer within a byte budget. Runs in a worker thread."""

from __future__ import annotations

import gc
import hashlib
import logging
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson

from ..errors import TooLarge
from ..records import iso_time
from .files import language_of, tokenize
from .gitinfo import git_context
from .index import ProjectIndex
from .manifests import project_metadata
from .orientation import first_reads, newcomer_ranking
from .ranking import Signals, named_in, rank
from .scanner import ScanFailed, scan_in_child
from .secrets import SecretPolicy, Withheld, withheld_record

log = logging.getLogger("orchestra")

__all__ = ["ContextEngine", "MAX_BYTES", "MIN_BYTES", "DEFAULT_BYTES"]

DEFAULT_BYTES = 262_144
MIN_BYTES = 1024
MAX_BYTES = 4_194_304
MAX_RELEVANT = 50
WINDOW_LINES = 12


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


def windows(text: str, terms: set[str], budget: int) -> str:
    """The lines around the lines that mention ``terms``, within ``budget`` bytes."""
    if not terms:
        return cut_utf8(text, budget)
    lines = text.splitlines()
    # every word of a line is a substring of the line in lower case: a quick test first
    likely = re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))).search
    hits = [i for i, line in enumerate(lines) if likely(line.lower()) and terms & set(tokenize(line))]
    if not hits:
        return cut_utf8(text, budget)
    spans: list[list[int]] = []
    for i in hits:
        lo, hi = max(0, i - WINDOW_LINES // 2), min(len(lines), i + WINDOW_LINES // 2 + 1)
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = hi
        else:
            spans.append([lo, hi])
    out, used = [], 0
    for lo, hi in spans:
        piece = f"... lines {lo + 1}-{hi} ...\n" + "\n".join(lines[lo:hi]) + "\n"
        size = len(piece.encode("utf-8"))
        if used + size > budget:
            out.append(cut_utf8(piece, budget - used))
            break
        out.append(piece)
        used += size
    return "".join(out)


def files_named_in_results(previous: list[dict[str, Any]], index: ProjectIndex) -> set[str]:
    """Files of the index that earlier results name, by path (``app/auth.py``, also as a
    trailing part of a longer path only at a folder boundary) or by unique-enough file name."""
    named: set[str] = set()
    for rec in previous:
        named |= named_in(orjson.dumps(rec.get("result", {})).decode(), index)
    return named


class ContextEngine:
    """One project root and its index. When to refresh is the context actor's decision."""

    def __init__(self, root: Path, scan_in_child: bool = True, withhold: tuple[str, ...] = ()) -> None:
        self.root = root.resolve()
        #: ``withhold``: patterns of files that may hold secrets, beyond the defaults (secrets.py)
        self.index = ProjectIndex(self.root, SecretPolicy(withhold))
        self.index.derivers.append(first_reads)  # an answer with no task reads it at once
        #: read the first (cold) index in a child process (see scanner.py)
        self.cold_in_child = scan_in_child
        self._child: subprocess.Popen[bytes] | None = None
        self.stopped = False
        # git's answers change only when the index generation moves (files, HEAD, staging):
        # asked once per generation, not once per answer
        self._git: tuple[int, dict[str, Any]] | None = None

    def _git_context(self) -> dict[str, Any]:
        generation = self.index.generation
        if self._git is None or self._git[0] != generation:
            self._git = (generation, git_context(self.root))
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
        mentioned = set(signals.mentioned) | files_named_in_results(previous, index)
        mentioned |= index.files_of_commits_mentioning(issue_id) & index.files.keys()
        uncommitted = {c["path"] for c in git["uncommitted_changes"]}
        sig = Signals(task=task or issue_id, mentioned=frozenset(mentioned),
                      uncommitted=frozenset(uncommitted), globs=signals.globs,
                      keywords=signals.keywords, prefer_kind=signals.prefer_kind)
        ranked = rank(index, sig, limit=MAX_RELEVANT)
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
                    "recent_commits": list(git["recent_commits"]),
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
        # 1. the skeleton must fit: shorten the listing, then history, then outputs
        if _size(body) > limit:
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
        # 2. files by priority: named, then by rank; windows for those that do not fit whole.
        # Sizes are added up per record (each costs its own length and a comma), so the whole
        # body is serialised once here, not once per candidate.
        terms = set(tokenize(task))
        used = _size(body)
        for score, path, _named in ranked:
            entry = index.files[path]
            try:
                text = index.scanner.read_text(path)  # the only read of a file for an answer
            except Withheld:
                withheld = withheld_record(entry.path, entry.size, iso_time(entry.mtime), entry.language,
                                           round(score, 3))
                size = _size(withheld) + 1
                if used + size <= limit:
                    ctx["relevant_files"].append(withheld)
                    used += size
                continue
            except OSError:
                continue
            record: dict[str, Any] = {
                "path": path, "content": "", "size": entry.size,
                "last_modified": iso_time(entry.mtime), "language": language_of(path),
                "checksum": "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest(),
                "relevance": round(score, 3),
            }
            overhead = _size(record) + 1
            room = limit - used - overhead
            if room < 200:
                if "ranked_files_dropped" not in strategies:
                    strategies.append("ranked_files_dropped")
                continue
            record["content"] = text
            size = _size(record) + 1
            if used + size > limit:
                record["content"] = windows(text, terms, room)
                record["excerpt"] = True
                size = _size(record) + 1
                while used + size > limit and record["content"]:
                    record["content"] = cut_utf8(record["content"], int(len(record["content"].encode()) * 0.9) - 16)
                    size = _size(record) + 1
                if "large_files_windowed" not in strategies:
                    strategies.append("large_files_windowed")
                if used + size > limit:
                    continue
            ctx["relevant_files"].append(record)
            used += size
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
