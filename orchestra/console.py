"""The ``orchestra`` console script: which command, before anything heavy is imported.

``orchestra agent ...`` is run by shell scripts once per call, so its start-up is part of every
call (bench/shell_client.py): it goes straight to transport/agent_cli.py, which loads only what
one request needs. Every other command goes through transport/cli.py's parser, whose imports
(argparse's helpers, pathlib, signal, typing) cost more than an agent's whole request.
"""

import sys

__all__ = ["main"]


def main(argv: "list[str] | None" = None) -> int:
    """Run ``orchestra ARGS``; the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["agent"]:
        from .transport.agent_cli import main as agent_main

        return agent_main(args[1:])
    from .transport.cli import main as cli_main

    return cli_main(args)
