"""The settings of ``orchestra serve``, each defined once.

A setting is read from its command-line flag, else its ``ORCHESTRA_*`` environment variable,
else its key in the TOML file named by ``--config`` (or ``ORCHESTRA_CONFIG``), else it has its
default. The same definition makes the flag, the variable's and the key's name, the command's
help, the commented default file (``orchestra config --print-defaults``) and the reference in
docs/configuration.md, so none of them can drift from the others.

No I/O but reading the config file and checking that the paths it names exist; the
environment is passed in.
"""

from __future__ import annotations

import argparse
import difflib
import shlex
import textwrap
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..actors.records import MAX_JSON_DEPTH
from .argtypes import (
    OneOf,
    boolean,
    existing_dir,
    existing_file,
    host,
    int_in,
    number_in,
    one_of,
    project_entry,
)

__all__ = [
    "CONFIG_ENV", "ConfigError", "ENV_PREFIX", "SERVE_SETTINGS", "Setting", "Resolved", "add_flags",
    "config_path", "default_file", "misspelt_variables", "read_environment", "read_file",
    "reference_markdown", "resolve",
]

ENV_PREFIX = "ORCHESTRA_"
#: The variable that names a config file when ``--config`` is not given.
CONFIG_ENV = "ORCHESTRA_CONFIG"

#: Bounds of values (docs/configuration.md).
MAX_JSON_DEPTH_FLAG = 200  # leaves room under orjson's 254 levels for what wraps a body
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names where it came from (the flag, the
    environment variable, or the file and its key)."""


Kind = Literal["value", "switch", "list", "table"]


@dataclass(frozen=True)
class Setting:
    """One setting of ``orchestra serve``.

    ``kind``: ``value`` (one value), ``switch`` (``--name``/``--no-name``; true or false in the
    environment and the file), ``list`` (a repeated flag, a space-separated list in the
    environment as a shell splits it, a TOML array of strings in the file) or ``table`` (a
    repeated ``KEY=VALUE`` flag, a space-separated list in the environment, a TOML table in
    the file)."""

    name: str
    #: text of a flag or a variable to value; refuses with ``argparse.ArgumentTypeError``
    parse: Callable[[str], Any]
    default: Any
    help: str
    #: the TOML types the file's value may have
    toml: tuple[type, ...] = (str,)
    kind: Kind = "value"
    metavar: str | None = None
    #: the default said in words, where it is worked out at start (``default`` is then None)
    default_text: str | None = None
    #: a path: in the file, relative to the file's folder
    path: bool = False
    #: an example value for the default file, where the default is not a value
    example: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def shown_metavar(self) -> str:
        """The flag's value in the usage: the choices where there are some."""
        if isinstance(self.parse, OneOf):
            return "{" + ",".join(self.parse.choices) + "}"
        return self.metavar or self.name.upper()

    @property
    def accepts(self) -> str:
        """The values accepted, in words (from the value type itself where it has bounds)."""
        said = getattr(self.parse, "accepts", None)
        if isinstance(said, str):
            return said
        return _ACCEPTS.get(self.parse, "text")

    def shown_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if self.kind == "switch":
            return "on" if self.default else "off"
        if self.kind in ("list", "table"):
            return "none"
        return str(self.default)

    def from_text(self, text: str) -> Any:
        """The value of an environment variable's text."""
        if self.kind == "switch":
            return boolean(text)
        if self.kind in ("list", "table"):
            return [self.parse(item) for item in shlex.split(text)]
        return self.parse(text)

    def from_toml(self, value: Any, base: Path) -> Any:
        """The value of a config file's key; relative paths are taken from ``base``."""
        if self.kind == "table":
            if not isinstance(value, dict):
                raise argparse.ArgumentTypeError("must be a table of KEY = \"VALUE\"")
            items = []
            for key, item in value.items():
                if not isinstance(item, str):
                    raise argparse.ArgumentTypeError(f"{key!r} must be a string")
                items.append(self.parse(f"{key}={base / item if self.path else item}"))
            return items
        if self.kind == "list":
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise argparse.ArgumentTypeError("must be an array of strings")
            return [self.parse(str(base / item) if self.path else item) for item in value]
        # bool is an int in Python, but true is no number of seconds
        if not isinstance(value, self.toml) or (isinstance(value, bool) and bool not in self.toml):
            raise argparse.ArgumentTypeError(f"must be {_toml_kind(self.toml)}, got {value!r}")
        if self.kind == "switch":
            return value
        if self.path:
            value = str(base / str(value))
        return self.parse(str(value))

    def to_toml(self, value: Any) -> Any:
        """A value as the file writes it (the inverse of ``from_toml``)."""
        if self.kind == "table":
            return {key: str(path) for key, path in value}
        if self.kind == "list":
            return [str(item) for item in value]
        if isinstance(value, Path):
            return str(value)
        return value


def postgres_url(text: str) -> str:
    """A ``postgresql://`` (or ``postgres://``) URL; whether it answers is checked at start."""
    from ..actors.store_postgres import is_postgres_url

    if not is_postgres_url(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a postgresql:// URL")
    return text


def withhold_pattern(text: str) -> str:
    """A gitignore-style pattern of files that context answers withhold."""
    from ..actors.context.secrets import SecretPolicy

    try:
        if not text.strip() or text.lstrip().startswith("#"):
            raise ValueError("it matches nothing")
        SecretPolicy((text,))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pattern in gitignore syntax ({exc})") from None
    return text


def _toml_kind(types: tuple[type, ...]) -> str:
    if bool in types:
        return "true or false"
    if float in types:
        return "a number"
    if int in types:
        return "an integer"
    return "a string"


_ACCEPTS: dict[Any, str] = {
    boolean: "true or false",
    host: "a host name or IP address",
    existing_dir: "an existing directory",
    existing_file: "an existing file",
    project_entry: "ID=PATH: an id and an existing directory",
    Path: "a path (the folder is made if missing)",
}


def _seconds(lo: float, hi: float) -> Callable[[str], float]:
    return number_in(lo, hi, "seconds")


_INT = (int,)
_NUMBER = (int, float)

SERVE_SETTINGS: tuple[Setting, ...] = (
    Setting("host", host, "127.0.0.1", "address to listen on (0.0.0.0 or :: for every interface)",
            metavar="ADDRESS"),
    Setting("port", int_in(0, 65535), 3001, "port to listen on; 0 picks a free one (the listening "
            "line on stdout says which)", _INT),
    Setting("data_dir", Path, None, "durable store, agent logs, contexts and the signing key",
            metavar="DIR", default_text="a per-user data folder (~/.local/share/orchestra on Linux)",
            path=True, example="/var/lib/orchestra"),
    Setting("store", postgres_url, None, "postgresql://... keeps the durable store in PostgreSQL "
            "(needs the postgres extra); unset: SQLite in the data dir", metavar="URL",
            default_text="SQLite in the data dir", example="postgresql://orchestra@127.0.0.1/orchestra"),
    Setting("workers", int_in(1, 256), 1, "server processes sharing the port on this host "
            "(SO_REUSEPORT), each with its own actors; more than 1 needs a postgresql:// --store",
            _INT, metavar="N"),
    Setting("root", existing_dir, None, "code base for the context of projects without a project "
            "entry", metavar="DIR", default_text="the current directory", path=True,
            example="/srv/code"),
    Setting("project", project_entry, [], "the code base of one project, ID=PATH (the flag may be "
            "repeated)", kind="table", metavar="ID=PATH", path=True,
            example={"web": "/srv/code/web"}),
    Setting("profiles", existing_file, None, "agent profiles file (TOML or JSON; "
            "docs/configuration.md, \"Profiles\")", metavar="FILE", default_text="the built-in profiles",
            path=True, example="/etc/orchestra/profiles.toml"),
    Setting("max_body_bytes", int_in(1, 2**31 - 1), 10 * 1024 * 1024, "longest HTTP request body "
            "or incoming WebSocket message (longer: 413 REQ_002, WebSocket close 1009)", _INT,
            metavar="BYTES"),
    Setting("max_json_depth", int_in(2, MAX_JSON_DEPTH_FLAG), MAX_JSON_DEPTH, "JSON nesting levels of a body "
            "or frame (the body counts as 1)", _INT, metavar="N"),
    Setting("fault_injection", boolean, False, "enable POST /api/admin/faults (admin tokens only)",
            (bool,), kind="switch"),
    Setting("rate_limits", boolean, True, "per-agent rate limits from the agent type's profile",
            (bool,), kind="switch"),
    Setting("jwt_public_key", existing_file, None, "PEM public key: also accept tokens signed "
            "by its private key with --jwt-algorithm", metavar="FILE", default_text="none",
            path=True, example="/etc/orchestra/issuer.pem"),
    Setting("jwt_algorithm", one_of("RS256", "ES256", "EdDSA"), "RS256",
            "algorithm of --jwt-public-key"),
    Setting("jwt_previous_key", existing_file, None, "the key before a rotation, accepted for "
            "verification only (never for signing): an HS256 secret file, or a PEM public key of "
            "--jwt-algorithm", metavar="FILE", default_text="none", path=True,
            example="/var/lib/orchestra/jwt.secret.previous"),
    Setting("event_retention", int_in(1, 10**9), 10_000, "events kept per project", _INT, metavar="N"),
    Setting("event_retention_bytes", int_in(1024, 2**40), 64 * 1024 * 1024, "encoded bytes of "
            "events kept per project (the oldest go first)", _INT, metavar="BYTES"),
    Setting("idempotency_window", _seconds(1, 366 * 86_400), 86_400.0, "seconds a repeated "
            "idempotency key is answered with the original answer", _NUMBER, metavar="SECONDS"),
    Setting("sync", one_of("normal", "full"), "normal", "SQLite synchronous mode: normal survives "
            "a crash of the process, full also a power loss"),
    Setting("context_sweep", _seconds(0, 86_400), 2.0, "seconds between full checks of a code "
            "base for changes where file watching is unavailable (with watching, changes arrive at "
            "once and a full check runs every 60 s); 0: a check before every context request", _NUMBER, metavar="SECONDS"),
    Setting("context_withhold", withhold_pattern, [], "files whose content no context answer gives "
            "out, beyond the built-in list of files that may hold secrets (gitignore syntax; the "
            "flag may be repeated)", (list,), kind="list", metavar="GLOB"),
    Setting("context_listing_share", number_in(0.01, 1), 0.25, "share of a context answer's "
            "max_bytes the project's listing may take (a longer listing keeps the paths nearest "
            "the root and says listing_truncated)", _NUMBER, metavar="FRACTION"),
    Setting("context_search_cache_bytes", int_in(0, 2**40), 4 * 1024 * 1024, "bytes of the "
            "offsets where a task's words were found in the files a context answer shows in "
            "windows, kept per project so that a large file is not searched again for a word "
            "(0: none kept)", _INT, metavar="BYTES"),
    Setting("context_word_tables", int_in(1, 1_000_000), 512, "ranking tables of single words "
            "(a word's BM25 list, its path bonus) kept per project until its code base changes; "
            "the least recently used go first", _INT, metavar="N"),
    Setting("shutdown_grace", _seconds(0, 3600), 3.0, "seconds requests in progress may take to "
            "finish on SIGINT/SIGTERM before they are cancelled", _NUMBER, metavar="SECONDS"),
    Setting("max_agents_per_project", int_in(1, 100_000), 64, "spawned agents running at once "
            "in one project (more: 429 AGENT_002)", _INT, metavar="N"),
    Setting("max_spawn_depth", int_in(1, 100), 3, "an agent spawned by a spawned agent ... at "
            "most this deep (deeper: 429 AGENT_002)", _INT, metavar="N"),
    Setting("agent_stop_grace", _seconds(0, 600), 5.0, "on shutdown (and when a start ends agents "
            "a crash left behind), seconds between SIGTERM and SIGKILL of every spawned agent", _NUMBER, metavar="SECONDS"),
    Setting("lease_interval", _seconds(0.05, 600), 2.0, "with a postgresql:// store: seconds "
            "between the beats of each process's lease", _NUMBER, metavar="SECONDS"),
    Setting("lease_expiry", _seconds(0.2, 3600), 10.0, "with a postgresql:// store: a process "
            "whose lease is older than this is lost, and another process records its spawned "
            "agents failed (at least twice --lease-interval)", _NUMBER, metavar="SECONDS"),
    Setting("log_level", one_of(*LOG_LEVELS), "info", "lowest level of the log lines on stderr"),
    Setting("log_format", one_of(*LOG_FORMATS), "text", "log lines as text, or one JSON object "
            "per line"),
    Setting("access_log", boolean, True, "one log line per HTTP request and WebSocket op",
            (bool,), kind="switch"),
    Setting("otel", boolean, False, "OpenTelemetry spans of requests (needs the otel extra; "
            "exporters from the OTEL_* variables)", (bool,), kind="switch"),
)


def add_flags(parser: argparse.ArgumentParser, settings: Iterable[Setting]) -> None:
    """One flag per setting. A flag not given is absent from the parsed namespace (its value
    then comes from the environment, the file or the default: ``resolve``)."""
    for s in settings:
        help_text = f"{s.help} [default: {s.shown_default()}; env {s.env}]".replace("%", "%%")
        if s.kind == "switch":
            parser.add_argument(s.flag, dest=s.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        elif s.kind in ("list", "table"):
            parser.add_argument(s.flag, dest=s.name, type=s.parse, action="append",
                                default=argparse.SUPPRESS, metavar=s.shown_metavar, help=help_text)
        else:
            parser.add_argument(s.flag, dest=s.name, type=s.parse, default=argparse.SUPPRESS,
                                metavar=s.shown_metavar, help=help_text)


def read_environment(settings: Iterable[Setting], environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given by ``ORCHESTRA_*`` variables; an empty variable counts as unset."""
    values: dict[str, Any] = {}
    for s in settings:
        text = environ.get(s.env)
        if not text:
            continue
        try:
            values[s.name] = s.from_text(text)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ConfigError(f"environment variable {s.env}: {exc}") from None
    return values


def misspelt_variables(settings: Iterable[Setting], environ: Mapping[str, str]) -> list[str]:
    """Warnings for ``ORCHESTRA_*`` variables that name no setting but nearly do (a typo would
    otherwise be ignored without a word)."""
    names = {s.env for s in settings} | {CONFIG_ENV, "ORCHESTRA_JWT_SECRET"}
    warnings = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in names:
            near = difflib.get_close_matches(name, names, n=1, cutoff=0.85)
            if near:
                warnings.append(f"environment variable {name} is not a setting; did you mean {near[0]}?")
    return warnings


def read_file(settings: Sequence[Setting], path: Path, only: Iterable[str] | None = None) -> dict[str, Any]:
    """The settings of a TOML config file. Every key must name a setting; ``only``: convert
    just these (the others are still checked to be known)."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    by_name = {s.name: s for s in settings}
    wanted = set(by_name) if only is None else set(only)
    base = Path(path).resolve().parent
    values: dict[str, Any] = {}
    for key, value in document.items():
        setting = by_name.get(key)
        if setting is None:
            near = difflib.get_close_matches(key, by_name, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"config file {path}: unknown key {key!r}{hint}")
        if key not in wanted:
            continue
        try:
            values[key] = setting.from_toml(value, base)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ConfigError(f"config file {path}: key {key!r}: {exc}") from None
    return values


@dataclass(frozen=True)
class Resolved:
    """Every setting's value, and where each came from (``flag``, ``env``, ``file``,
    ``default``)."""

    values: Mapping[str, Any]
    origins: Mapping[str, str]


def resolve(
    settings: Iterable[Setting],
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None,
    only: Iterable[str] | None = None,
) -> Resolved:
    """Flag, else environment variable, else config file, else default; ``only``: of these
    settings (the file's other keys are still checked to be known)."""
    every = tuple(settings)
    wanted = {s.name for s in every} if only is None else set(only)
    chosen = tuple(s for s in every if s.name in wanted)
    layers = [
        ("flag", {s.name: flags[s.name] for s in chosen if s.name in flags}),
        ("env", read_environment(chosen, environ)),
        ("file", read_file(every, config_file, only=wanted) if config_file is not None else {}),
        ("default", {s.name: s.default for s in chosen}),
    ]
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for s in chosen:
        for origin, layer in layers:
            if s.name in layer:
                values[s.name], origins[s.name] = layer[s.name], origin
                break
    return Resolved(values, origins)


def config_path(flags: Mapping[str, Any], environ: Mapping[str, str]) -> Path | None:
    """The config file: ``--config``, else ``ORCHESTRA_CONFIG``, else none."""
    given = flags.get("config") or environ.get(CONFIG_ENV)
    return Path(given) if given else None


_HEADER = """\
# Orchestra server settings: orchestra serve --config FILE (or ORCHESTRA_CONFIG=FILE).
# Precedence: a command-line flag, else its ORCHESTRA_* environment variable, else this file,
# else the built-in default. Relative paths here are taken from this file's folder.
# Every key below is set to its default; a commented key has no default value to write.
"""


def default_file(settings: Sequence[Setting]) -> str:
    """A commented TOML file of every setting at its default (loading it gives the defaults)."""
    import tomli_w

    parts = [_HEADER]
    # a table's keys must come last: every key after a [table] header belongs to the table
    for s in sorted(settings, key=lambda s: s.kind == "table"):
        lines = [f"# {line}" for line in textwrap.wrap(f"{s.help}.", 96)]
        lines.append(f"# accepts {s.accepts}; default: {s.shown_default()}; flag {s.flag}, env {s.env}")
        if s.default is None or s.kind == "table":
            example = s.to_toml(s.example if s.kind != "table" else list(s.example.items()))
            lines += [f"# {line}" if line else "#" for line in
                      tomli_w.dumps({s.name: example}).strip().splitlines()]
        else:
            lines.append(tomli_w.dumps({s.name: s.to_toml(s.default)}).strip())
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference_markdown(settings: Sequence[Setting]) -> str:
    """The reference table of docs/configuration.md (a test compares the two)."""
    rows = [
        "| file key | flag | environment variable | default | accepts | what |",
        "|---|---|---|---|---|---|",
    ]
    for s in settings:
        if s.kind == "switch":
            flag = f"`{s.flag}` / `--no-{s.flag[2:]}`"
        else:
            flag = f"`{s.flag} {s.shown_metavar}`"
        rows.append(
            f"| `{s.name}` | {_cell(flag)} | `{s.env}` | {_cell(s.shown_default())} "
            f"| {_cell(s.accepts)} | {_cell(s.help)} |"
        )
    return "\n".join(rows) + "\n"
