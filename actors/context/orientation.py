"""What a newcomer to a code base opens first: the answer to a request that names no task.

Pure, over an index. In order: the README, the manifests (what the project is, what it needs,
how it is built), the entry points (``__main__.py``, ``main.go``, ``src/main.rs``, the
top-level packages' ``__init__.py``, ...), the guides for contributors, then the project's
main modules: the source files (or, for an agent that prefers tests or docs, those) that most
other files import and that change most often, shallow ones first; then every other text file
in the same order, so that the answer fills its budget. The project is found at the
root or, when the root holds no README or manifest, in the folders one level down that do
(a root that is a folder holding the repository).
"""

from __future__ import annotations

import math
import re

from .index import ProjectIndex
from .ranking import Signals

__all__ = ["first_reads", "newcomer_ranking"]

_README = re.compile(r"readme(\.[a-z]+)?$", re.I)
_MANIFESTS = {
    "pyproject.toml", "setup.py", "setup.cfg", "requirements.txt", "pipfile", "package.json",
    "tsconfig.json", "deno.json", "go.mod", "cargo.toml", "pom.xml", "build.gradle", "build.gradle.kts",
    "gemfile", "composer.json", "mix.exs", "cmakelists.txt", "meson.build", "makefile", "justfile",
    "dockerfile", "docker-compose.yml", "docker-compose.yaml", "compose.yaml", "build.zig", "pubspec.yaml",
}
_ENTRY_NAMES = {"__main__.py", "main.py", "app.py", "cli.py", "manage.py", "wsgi.py", "asgi.py",
                "main.go", "main.rs", "lib.rs", "index.js", "index.ts", "index.mjs", "main.js",
                "main.ts", "main.c", "main.cpp", "main.java", "program.cs", "main.kt", "server.js", "server.py"}
_GUIDES = re.compile(r"(architecture|contributing|developing|development|hacking|design)(\.[a-z]+)?$", re.I)
_ENTRY_DEPTH = 3  # entry points deeper than this below the project (cmd/x/main.go is 3) are modules


def _bases(index: ProjectIndex) -> list[str]:
    """The project's folder(s): ``""``, or the folders one level down holding a README or a
    manifest when the root holds neither."""
    marked: set[str] = set()  # "" and the top folders that hold a README or a manifest
    for p in index.files:
        head, _, rest = p.partition("/")
        name, base = (head, "") if not rest else (rest, head + "/")
        if "/" not in name and (_README.match(name) or name.lower() in _MANIFESTS):
            marked.add(base)
    if "" in marked or not marked:
        return [""]
    return sorted(marked)


def first_reads(index: ProjectIndex, prefer_kind: str | None = None) -> list[str]:
    """Every text file worth a newcomer's look, most worth first (see the module docstring).
    Computed once per index generation."""
    return index.memo(("first_reads", prefer_kind), lambda: _first_reads(index, prefer_kind))


def _first_reads(index: ProjectIndex, prefer_kind: str | None) -> list[str]:
    files = index.files
    bases = _bases(index)
    out: dict[str, None] = {}

    def add(paths: list[str]) -> None:
        for p in paths:
            f = files[p]
            if not f.binary and not f.withheld:
                out.setdefault(p, None)

    for base in bases:
        own = [p for p in files if p.startswith(base) and "/" not in p[len(base):]]
        add(sorted((p for p in own if _README.match(p[len(base):])), key=len))
        add(sorted(p for p in own if p[len(base):].lower() in _MANIFESTS))
    wanted = prefer_kind or "source"
    for base in bases:
        entries = []
        for p, f in files.items():
            rel = p[len(base):] if p.startswith(base) else None
            if rel is None or rel.count("/") > _ENTRY_DEPTH or f.kind in ("test", "doc"):
                continue
            name = rel.rsplit("/", 1)[-1].lower()
            if name in _ENTRY_NAMES or (name == "__init__.py" and rel.count("/") == 1) \
                    or (name == "__init__.py" and rel.startswith("src/") and rel.count("/") == 2):
                entries.append((rel.count("/"), p))
        add([p for _, p in sorted(entries)])
        add(sorted(p for p in files if p.startswith(base) and p[len(base):].count("/") <= 1
                   and _GUIDES.match(p.rsplit("/", 1)[-1])))
    importers = index.imported_by()
    churn = index.churn

    def weight(p: str) -> tuple[float, int, str]:
        score = len(importers.get(p, ())) + 3 * math.log1p(churn.get(p, 0))
        return -score, p.count("/"), p

    for kind in dict.fromkeys((wanted, "source")):
        add(sorted((p for p, f in files.items() if f.kind == kind and f.length), key=weight))
    add(sorted((p for p, f in files.items() if f.length), key=weight))  # the rest, to fill the budget
    return list(out)


def newcomer_ranking(index: ProjectIndex, ranked: list[tuple[float, str, bool]], signals: Signals,
                     limit: int) -> list[tuple[float, str, bool]]:
    """For a request with no task: the files the request's own signals raise (named by earlier
    results or by commits naming the issue, uncommitted changes) as ``rank`` placed them, then
    :func:`first_reads`, ``limit`` in all, in ``rank``'s ``(score, path, named)`` form."""
    raised = signals.mentioned | signals.uncommitted
    out = [r for r in ranked if r[1] in raised or r[2]][:limit]
    seen = {r[1] for r in out}
    for path in first_reads(index, signals.prefer_kind):
        if len(out) >= limit:
            break
        if path not in seen:  # scores below any raised file's, in this order
            out.append((1.0 - len(out) / (limit + 1), path, False))
    return out
