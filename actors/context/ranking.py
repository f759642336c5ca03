"""Relevance of files to a task: BM25 over contents and paths, plus signals. Pure."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from .index import ProjectIndex, language_of, tokenize

__all__ = ["Signals", "rank", "file_kind"]

_K1, _B = 1.2, 0.75
_DOC = re.compile(r"(^|/)(docs?|documentation)/|\.(md|rst|txt)$|(^|/)(CHANGELOG|CHANGES|HISTORY|NEWS|LICENSE)", re.I)
_TEST = re.compile(r"(^|/)(tests?|testing|spec)/|(^|/)test_[^/]*$|_test\.[a-z]+$|\.spec\.[a-z]+$|(^|/)conftest\.py$", re.I)
_CONFIG = re.compile(r"\.(toml|ya?ml|json|ini|cfg|lock)$|(^|/)(Dockerfile|Makefile|\.github/)", re.I)
_SOURCE_LANGS = {"python", "go", "rust", "javascript", "typescript", "java", "kotlin", "c", "cpp",
                 "ruby", "php", "csharp", "swift", "scala", "shell", "sql"}


def file_kind(path: str, language: str) -> str:
    if _TEST.search(path):
        return "test"
    if _DOC.search(path):
        return "doc"
    if _CONFIG.search(path):
        return "config"
    return "source" if language in _SOURCE_LANGS else "other"


@dataclass(frozen=True)
class Signals:
    task: str = ""
    #: files named by earlier results and events of the issue, and by commits mentioning it
    mentioned: frozenset[str] = frozenset()
    uncommitted: frozenset[str] = frozenset()
    globs: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    prefer_kind: str | None = None  # "test" for test engineers, "doc" for documentation experts


def named_in(task: str, paths: list[str]) -> set[str]:
    """Files the task text names, by path or by file name."""
    named = set()
    words = set(re.findall(r"[\w./-]+", task))
    by_name: dict[str, list[str]] = {}
    for p in paths:
        by_name.setdefault(p.rsplit("/", 1)[-1], []).append(p)
    for w in words:
        w = w.strip("./")
        if w in by_name and "." in w:
            named.update(by_name[w])
        elif "/" in w:
            named.update(p for p in paths if p == w or p.endswith("/" + w))
    return named


def rank(index: ProjectIndex, signals: Signals) -> list[tuple[float, str, bool]]:
    """(score, path, named) for every text file with any relevance, best first."""
    terms = tokenize(signals.task) + [k.lower() for k in signals.keywords]
    query = {t: index.idf(t) for t in set(terms)}
    paths = list(index.files)
    named = named_in(signals.task, paths)
    out = []
    for path, f in index.files.items():
        if f.binary:
            continue
        score = 0.0
        if f.length:
            norm = _K1 * (1 - _B + _B * f.length / index.avg_len)
            for t, idf in query.items():
                tf = f.terms.get(t)
                if tf:
                    score += idf * tf * (_K1 + 1) / (tf + norm)
        for t, idf in query.items():
            if t in f.path_terms:
                score += 1.5 * idf
        kind = file_kind(path, language_of(path))
        if score > 0:
            score *= {"source": 1.3, "test": 0.8, "doc": 0.6, "config": 0.7}.get(kind, 1.0)
        if signals.prefer_kind and kind == signals.prefer_kind and score > 0:
            score *= 2.0
        if path in signals.mentioned:
            score += 8.0
        if path in signals.uncommitted:
            score += 3.0
        if signals.globs and any(fnmatch.fnmatch(path, g) or fnmatch.fnmatch(path.rsplit("/", 1)[-1], g) for g in signals.globs):
            score = score * 1.3 + 0.5
        is_named = path in named
        if is_named:
            score += 100.0
        if score > 0:
            out.append((score, path, is_named))
    out.sort(key=lambda x: (-x[0], x[1]))
    return out
