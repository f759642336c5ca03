"""The ``orchestra mcp`` command line and the configuration snippets of ``--print-config``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, NoReturn

from ...actors.agents import MCP_ENV, mcp_server_entry
from ..argtypes import number_in
from ..client_link import ws_url
from ._upstream import RECONNECT_TIMEOUT

__all__ = ["CLIENTS", "build_parser", "config_snippet", "main"]

#: Clients ``--print-config`` writes a snippet for.
CLIENTS = ("claude", "codex", "generic")


def _env(name: str) -> str | None:
    """An environment variable; unset also when empty or a ``${...}`` reference a client left
    unexpanded (Claude Code passes ``${VAR}`` of an unset variable through as text)."""
    value = os.environ.get(name, "").strip()
    if not value or (value.startswith("${") and value.endswith("}")):
        return None
    return value


def config_snippet(client: str, *, url: str | None = None, token: str | None = None,
                   command: list[str] | None = None) -> str:
    """The text a user pastes into ``client``'s MCP configuration to run ``orchestra mcp``.

    ``url``/``token`` given: written as values. Not given: the client passes its own
    ``ORCHESTRA_URL``/``ORCHESTRA_TOKEN`` through (``${VAR}`` references for Claude Code and
    generic JSON, ``env_vars`` for Codex), so no token lands in a file.
    """
    entry = mcp_server_entry(command)
    literal = {k: v for k, v in (("ORCHESTRA_URL", url), ("ORCHESTRA_TOKEN", token)) if v is not None}
    forwarded = [name for name in MCP_ENV if name not in literal]
    if client == "codex":
        import tomli_w

        table: dict[str, Any] = {"command": entry["command"], "args": entry["args"]}
        table["env_vars"] = forwarded
        if literal:
            table["env"] = literal
        return tomli_w.dumps({"mcp_servers": {"orchestra": table}})
    entry["env"] = {name: literal.get(name, "${" + name + "}") for name in MCP_ENV}
    if client == "generic":
        entry.pop("type")
    return json.dumps({"mcpServers": {"orchestra": entry}}, indent=2) + "\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="orchestra mcp",
        description="An MCP server over stdio whose tools are Orchestra's protocol (docs/mcp.md).")
    parser.add_argument("--url", default=None,
                        help="the Orchestra server (default: env ORCHESTRA_URL), e.g. http://127.0.0.1:3001")
    parser.add_argument("--token", default=None, help="a JWT of the server (default: env ORCHESTRA_TOKEN)")
    parser.add_argument("--issue", default=None,
                        help="the issue tools default to (default: env ORCHESTRA_ISSUE_ID)")
    parser.add_argument("--connect-timeout", type=number_in(0.1, 3600, "seconds"), default=RECONNECT_TIMEOUT,
                        metavar="SECONDS",
                        help="a call fails with CONNECTION_FAILED after this long without a connection "
                             f"to the server (default {RECONNECT_TIMEOUT:g})")
    parser.add_argument("--print-config", action="store_true",
                        help="print the snippet for an MCP client's configuration and exit")
    parser.add_argument("--client", choices=CLIENTS, default="claude",
                        help="which client --print-config writes for (default: claude)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.print_config:
        sys.stdout.write(config_snippet(args.client, url=args.url, token=args.token))
        if args.client == "generic" and (args.url is None or args.token is None):
            print("orchestra mcp: a client that does not expand ${VAR} in its configuration needs "
                  "the values written in (--url, --token)", file=sys.stderr)
        return 0
    url = args.url or _env("ORCHESTRA_URL")
    token = args.token or _env("ORCHESTRA_TOKEN")
    if url is None or token is None:
        missing = " and ".join(n for n, v in (("--url (or ORCHESTRA_URL)", url),
                                               ("--token (or ORCHESTRA_TOKEN)", token)) if v is None)
        print(f"orchestra mcp: needs {missing}", file=sys.stderr)
        return 2
    try:
        ws_url(url)
    except ValueError as exc:
        print(f"orchestra mcp: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    issue = args.issue or _env("ORCHESTRA_ISSUE_ID")
    import trio

    from ._server import serve

    try:
        trio.run(lambda: serve(url, token, default_issue=issue, connect_timeout=args.connect_timeout))
    except KeyboardInterrupt:
        pass
    return 0
