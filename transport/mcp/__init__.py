"""``orchestra mcp``: Orchestra's protocol as the tools of an MCP server over stdio (docs/mcp.md).

A client of a running Orchestra server through the SDK (transport/client.py), nothing more:
what a tool does, any client of the protocol can do. Only serving imports the ``mcp``
package: the server, the other commands and ``--print-config`` never load it.

Guarantees:

- One connection to the Orchestra server, opened at start (so the SDK keeps the token fresh);
  a server that cannot be reached or a token it refuses is each call's tool error, and the
  next call tries again. A dropped connection is reopened by the SDK (requests in flight are
  sent again, writes stored once).
- Every error answer is a tool error (``isError``) whose text starts with the error object's
  code and message and whose structured content is the whole object (``retry_after_seconds``
  for a rate limit). One failing call fails only itself.
- ``wait_for_events`` returns as soon as an event matches, or at its timeout with no events;
  either way with ``next_cursor``: passed back as ``since``, nothing published in between is
  missed, whatever happened to this process or its connection.
- The process ends, exit status 0, when its stdin closes.

Modules: ``_upstream`` (the one SDK client), ``_server`` (tools, resources, notifications),
``_command`` (the command line and the configuration snippets).
"""

from ._command import CLIENTS, build_parser, config_snippet, main

__all__ = ["CLIENTS", "build_parser", "config_snippet", "main"]
