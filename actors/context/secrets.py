"""Which files of a code base may hold secrets, so that their content never reaches an agent.

The one place that decides it. A file is withheld when its path matches one of
:data:`WITHHELD_BY_DEFAULT` or of the server's extra patterns (``orchestra serve
--context-withhold GLOB``), both read the way git reads a ``.gitignore`` (a pattern without a
slash matches a name at any depth; ``/x`` is anchored at the root; ``**`` spans folders; ``!``
takes a path back out of an earlier pattern), or when its bytes hold a private key block
(``-----BEGIN ... PRIVATE KEY-----``), whatever its name.

A withheld file is still listed and may be ranked, as a path marked withheld; its words are
not indexed and its content is not inlined. ``TreeScanner.read_text`` (scanning.py) is the
only way an answer reads a file's text; it applies both rules to the path asked, to the path a
link leads to, and to the bytes it has just read, so a file that became a secret after it was
indexed is still withheld.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pathspec

__all__ = ["Withheld", "SecretPolicy", "WITHHELD_BY_DEFAULT", "WITHHELD_REASON", "holds_private_key",
           "withheld_record"]

#: what commonly holds secrets: environment files, private keys and key stores, cloud and
#: package-registry credentials. ``.npmrc`` and ``.pypirc`` are withheld whether or not they
#: hold a token (telling the two apart would mean reading them for the answer).
WITHHELD_BY_DEFAULT: tuple[str, ...] = (
    ".env", ".env.*", "*.env",
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.ppk", "*.asc", "*.gpg",
    "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk",
    "credentials*.json", "*credentials.json", "service-account*.json", ".git-credentials",
    ".netrc", "_netrc", ".pgpass", ".npmrc", ".pypirc", ".dockercfg", ".docker/config.json",
    ".aws/credentials", ".htpasswd", "*.kdbx", "secrets.y*ml", "*.tfvars",
)
WITHHELD_REASON = "withheld: may hold secrets"
_SEEN_MAX = 200_000
#: a PEM or OpenSSH private key, or an armored PGP private key block, anywhere in the bytes
_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")


class Withheld(Exception):
    """The file may hold secrets: its content is not given out."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: {WITHHELD_REASON}")
        self.path = path


def holds_private_key(data: bytes) -> bool:
    return _PRIVATE_KEY.search(data) is not None


@dataclass(frozen=True)
class SecretPolicy:
    """The withheld patterns: the defaults plus ``extra`` (gitignore syntax, see the module
    docstring). Its rules never change, so one policy is shared by every thread (its memo of
    decided paths is a plain dict: a race only decides a path twice)."""

    extra: tuple[str, ...] = ()
    _spec: Any = field(init=False, repr=False, compare=False)
    #: paths already decided (a path's decision never changes); at most _SEEN_MAX
    _seen: dict[str, bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_spec", pathspec.GitIgnoreSpec.from_lines(
            [*WITHHELD_BY_DEFAULT, *self.extra]))
        object.__setattr__(self, "_seen", {})

    def withholds_path(self, rel: str) -> bool:
        """True when the path (relative, ``/``-separated) matches the withheld patterns."""
        known = self._seen.get(rel)
        if known is None:
            if len(self._seen) >= _SEEN_MAX:  # a bound, not an eviction policy: start over
                self._seen.clear()
            known = self._seen[rel] = bool(self._spec.match_file(rel))
        return known

    def withholds(self, rel: str, data: bytes) -> bool:
        return self.withholds_path(rel) or holds_private_key(data)


def withheld_record(path: str, size: int, last_modified: str, language: str, relevance: float) -> dict[str, Any]:
    """A ``relevant_files`` entry for a withheld file: its path and facts, never its content
    (nor a checksum of it: a hash of a short token can be guessed)."""
    return {"path": path, "content": "", "size": size, "last_modified": last_modified,
            "language": language, "checksum": None, "relevance": relevance,
            "inlined": False, "withheld": True, "reason": WITHHELD_REASON}
