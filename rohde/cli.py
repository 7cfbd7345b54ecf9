"""`rohde` command line: one subcommand per job, each registered by the package that owns it.

Registration modules import nothing heavy at import time (torch, matplotlib, pylsl load inside the
handlers), so `rohde serve --help` never pulls in the training stack.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from rohde.core.errors import RohdeError
from rohde.core.prompt_exit import exit_now
from rohde.core.version import VERSION

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from rohde.bench import commands as bench_commands
    from rohde.data_tools import commands as data_commands
    from rohde.reliability import commands as reliability_commands
    from rohde.server import commands as server_commands
    from rohde.training import commands as training_commands
    from rohde.training import study_commands

    parser = argparse.ArgumentParser(prog="rohde", description="Robust real-time HD-EMG gesture recognition.")
    parser.add_argument("--version", action="version", version=f"rohde {VERSION}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_commands.register(subparsers)
    training_commands.register(subparsers)
    study_commands.register(subparsers)
    server_commands.register(subparsers)
    bench_commands.register(subparsers)
    reliability_commands.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; as the program itself (`argv` None), a command registered with
    `prompt_exit=True` (a streaming one) ends its process at once when done (`rohde.core.prompt_exit`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        code = handler(args)
    except RohdeError as exc:
        logging.getLogger("rohde").error("%s", exc)
        code = 2
    except KeyboardInterrupt:
        code = 130
    if argv is None and getattr(args, "prompt_exit", False):
        exit_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
