"""What one file is and says: its language, its kind, its words, its definitions and imports.

Pure rules over a path and a file's bytes (no index, no walking): the scanner reads files with
them and the ranking classifies paths with them.
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from .secrets import SecretPolicy, holds_private_key

__all__ = ["FileEntry", "MAX_INDEXED_BYTES", "file_kind", "fold_name", "language_of", "read_file",
           "real_relative", "term_counts", "tokenize"]

#: files larger than this are listed, not read
MAX_INDEXED_BYTES = 512 * 1024
#: third-party code kept in the repository: listed, not read (in a Go server it can be three
#: quarters of the files, and its words would drown the project's own in every ranking)
_VENDORED = re.compile(r"(^|/)(vendor|node_modules|third_party|third-party|bower_components)/")
_LANG = {
    ".py": "python", ".go": "go", ".rs": "rust", ".js": "javascript", ".mjs": "javascript",
    ".cjs": "javascript", ".ts": "typescript", ".tsx": "typescript", ".jsx": "javascript",
    ".java": "java", ".kt": "kotlin", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
    ".hpp": "cpp", ".rb": "ruby", ".php": "php", ".cs": "csharp", ".swift": "swift",
    ".scala": "scala", ".ex": "elixir", ".exs": "elixir", ".sh": "shell", ".md": "markdown", ".rst": "rst", ".toml": "toml",
    ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".html": "html", ".css": "css",
    ".sql": "sql", ".txt": "text",
    # more languages, by extension alone (2026-11-30, before the final check of that day)
    ".mts": "typescript", ".cts": "typescript", ".cxx": "cpp", ".hh": "cpp", ".hxx": "cpp", ".ipp": "cpp",
    ".hs": "haskell", ".lhs": "haskell", ".vue": "vue", ".svelte": "svelte", ".pl": "perl", ".pm": "perl",
    ".lua": "lua", ".dart": "dart", ".zig": "zig", ".ml": "ocaml", ".mli": "ocaml", ".erl": "erlang",
    ".hrl": "erlang", ".clj": "clojure", ".cljs": "clojure", ".mm": "objective-c",
}
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*|[0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def _at_line_starts(source: str) -> re.Pattern[str]:
    r"""The pattern ``source`` (starting with ``^``: at a line's start, under MULTILINE) for the
    text with a newline put before it (see :func:`_found`): the newline is a literal the regex
    engine skips to, where ``^`` is tried at every character (4x faster on Go code). The same
    matches (groups and ends), each starting at the newline before its line; but after a match
    that ended on an empty line (Go's ``"x"\s*$`` can take a newline and stop before the
    next), at that empty line's own newline, which ``^\s*`` would have taken first anyway."""
    if not source.startswith("^"):
        raise ValueError(f"not anchored at a line's start: {source}")
    return re.compile("\n" + source[1:], re.M)


_DEFS = {
    "python": _at_line_starts(r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)"),
    "go": _at_line_starts(r"^(?:func(?:\s*\([^)]*\))?|type)\s+([A-Za-z_]\w*)"),
    "rust": _at_line_starts(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:fn|struct|enum|trait|type|mod|macro_rules!)\s+([A-Za-z_]\w*)"),
    "javascript": re.compile(r"(?:function\s+([A-Za-z_$][\w$]*)|class\s+([A-Za-z_$][\w$]*)|(?:^|\n)\s*(?:exports\.|module\.exports\.)?([A-Za-z_$][\w$]*)\s*=\s*function|(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=\s*(?:async\s*)?\()"),
    "typescript": re.compile(r"(?:function\s+([A-Za-z_$][\w$]*)|class\s+([A-Za-z_$][\w$]*)|interface\s+([A-Za-z_$][\w$]*)|(?:const|let)\s+([A-Za-z_$][\w$]*)\s*=\s*(?:async\s*)?\()"),
    "java": re.compile(r"(?:class|interface|enum)\s+([A-Za-z_]\w*)|\b(?:public|private|protected|static)[\w<>\[\]\s]+\s([a-z]\w*)\s*\("),
}
_IMPORTS = {
    "python": _at_line_starts(r"^\s*(?:from\s+([.\w]+)\s+import|import\s+([\w.]+))"),
    "javascript": re.compile(r"""(?:require\(\s*['"]([^'"]+)['"]\s*\)|from\s+['"]([^'"]+)['"]|import\s+['"]([^'"]+)['"])"""),
    "typescript": re.compile(r"""(?:require\(\s*['"]([^'"]+)['"]\s*\)|from\s+['"]([^'"]+)['"]|import\s+['"]([^'"]+)['"])"""),
    # possessive where giving back cannot lead to a match (what follows each part cannot start
    # with what it holds): the same matches, with no backtracking into each line's first word
    "go": _at_line_starts(r'^\s*+(?:import\s++)?(?:\w++\s++)?"([^"]++)"\s*$'),
    "rust": _at_line_starts(r"^\s*(?:pub\s+)?(?:mod\s+(\w+)\s*;|use\s+(?:crate|super|self)::([\w:]+))"),
}


def _found(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    """The matches of one of _DEFS or _IMPORTS in ``text``."""
    return pattern.finditer("\n" + text if pattern.pattern.startswith("\n") else text)


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


#: every byte _WORD never matches (all but ASCII letters and digits) made a space: a file's
#: runs of letters and digits are then its bytes translated and split, both in C
_RUNS = bytes(c if chr(c).isascii() and chr(c).isalnum() else 0x20 for c in range(256))


def term_counts(text: str | bytes) -> tuple[dict[str, int], int]:
    """How often each word of :func:`tokenize` occurs in ``text`` (or in the bytes of a file:
    a word is ASCII, so a UTF-8 decoding would not change it), and how many there are in all:
    the same figures, in the same order, splitting each distinct word once (most words of a
    file repeat). A run of letters and digits is one word of ``_WORD`` unless it starts with a
    digit and holds a letter (``0x1F``: ``0`` and ``x1F``), split by ``_WORD`` itself."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    counts: dict[str, int] = {}
    get = counts.get
    length = 0
    for word, n in Counter(data.translate(_RUNS).decode("ascii").split()).items():
        if word[0] < "A" and not word.isdigit():  # a digit, then letters: rare
            length += _count_words(counts, _WORD.findall(word), n)
            continue
        # as _count_words does for one word (inline: this loop runs once per distinct word)
        low = word.lower()
        if len(low) > 1:
            counts[low] = get(low, 0) + n
            length += n
        if low == word or word.isupper():
            continue
        parts = _CAMEL.findall(word)
        if len(parts) > 1:
            for part in parts:
                if len(part) > 1:
                    part = part.lower()
                    counts[part] = get(part, 0) + n
                    length += n
    return counts, length


def _count_words(counts: dict[str, int], words: list[str], n: int) -> int:
    """Add ``n`` occurrences of each of ``words`` (split as :func:`tokenize` splits them) to
    ``counts``; how many words were added."""
    get = counts.get
    length = 0
    for word in words:
        low = word.lower()
        if len(low) > 1:
            counts[low] = get(low, 0) + n
            length += n
        if low == word or word.isupper():
            continue
        parts = _CAMEL.findall(word)
        if len(parts) > 1:
            for part in parts:
                if len(part) > 1:
                    part = part.lower()
                    counts[part] = get(part, 0) + n
                    length += n
    return length


def fold_name(name: str) -> str:
    """``_bash_complete`` / ``bash-complete`` / ``BashComplete`` -> ``bashcomplete``."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


_DOC = re.compile(r"(^|/)(docs?|documentation|examples?)/|\.(md|rst|txt|adoc)$|(^|/)(CHANGELOG|CHANGES|HISTORY|NEWS|LICENSE|AUTHORS)", re.I)
_TEST = re.compile(r"(^|/)(tests?|testing|spec|__tests__|testdata)/|(^|/)test_[^/]*$|_test\.[a-z]+$|\.(spec|test)\.[a-z]+$|(^|/)conftest\.py$", re.I)
_CONFIG = re.compile(r"\.(toml|ya?ml|json|ini|cfg|lock|mod|sum)$|(^|/)(Dockerfile|Makefile|\.github/|\.gitignore)", re.I)
_SOURCE_LANGS = {"python", "go", "rust", "javascript", "typescript", "java", "kotlin", "c", "cpp",
                 "ruby", "php", "csharp", "swift", "scala", "elixir", "shell", "sql", "haskell", "vue",
                 "svelte", "perl", "lua", "dart", "zig", "ocaml", "erlang", "clojure", "objective-c"}


def file_kind(path: str, language: str) -> str:
    if _TEST.search(path):
        return "test"
    if _DOC.search(path):
        return "doc"
    if _CONFIG.search(path):
        return "config"
    return "source" if language in _SOURCE_LANGS else "other"



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
    kind: str = "other"  # source, test, doc, config or other (see file_kind)
    #: may hold secrets (see secrets.py): listed by path only, its words not indexed
    withheld: bool = False



def real_relative(root: str, fd: int, rel: str) -> str | None:
    """Where the open file ``fd`` (opened as ``root/rel``) really is, relative to ``root``;
    None if outside it. One ``readlink`` of /proc/self/fd where there is one."""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        real = os.path.realpath(os.path.join(root, rel))
    if not real.startswith(root + os.sep):
        return None
    return real[len(root) + 1:].replace(os.sep, "/")


def read_file(root: str, rel: str, size: int, mtime: float, policy: SecretPolicy) -> FileEntry:
    """The entry of the file at ``root/rel``: its words, definitions and imports when it is a
    text file of at most MAX_INDEXED_BYTES, not vendored, that ``policy`` does not withhold;
    the path's facts alone otherwise."""
    language = language_of(rel)
    entry = FileEntry(rel, size, mtime, path_terms=tuple(dict.fromkeys(map(sys.intern, tokenize(rel)))),
                      language=language, kind=file_kind(rel, language))
    if policy.withholds_path(rel):
        entry.withheld = True
        return entry
    if size > MAX_INDEXED_BYTES or _VENDORED.search(rel):
        return entry
    try:
        with open(os.path.join(root, rel), "rb") as f:
            real = real_relative(root, f.fileno(), rel)
            if real is None:
                return entry
            if real != rel and policy.withholds_path(real):  # a link to a secret
                entry.withheld = True
                return entry
            data = f.read()
    except OSError:
        return entry
    if holds_private_key(data):
        entry.withheld = True
        return entry
    if b"\0" in data[:8192]:
        entry.binary = True
        return entry
    entry.counts, entry.length = term_counts(data)
    text = data.decode("utf-8", "replace")
    defs = _DEFS.get(language)
    if defs is not None:
        entry.defines = tuple(dict.fromkeys(
            sys.intern(next(g for g in m.groups() if g).lower()) for m in _found(defs, text) if any(m.groups())
        ))
    imports = _IMPORTS.get(language)
    if imports is not None:
        entry.imports = tuple(
            next(g for g in m.groups() if g) for m in _found(imports, text) if any(m.groups())
        )
    return entry
