"""`rohde reliability`: its flags and handler; the cases load inside the handler."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from rohde.reliability.config import DEFAULT_OUT, GROUPS, QUICK, Durations, ReliabilityConfig, parse_limits

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    p = subparsers.add_parser("reliability", help="run the fault matrix against real parts; write docs/reliability.md")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="the Markdown report (default docs/reliability.md)")
    p.add_argument("--soak-minutes", type=float, default=None, help="soak length in minutes (default 30)")
    p.add_argument("--only", default="", help=f"comma-separated groups ({','.join(GROUPS)}) or GROUP:CASE names")
    p.add_argument("--quick", action="store_true", help="short durations and few clients (a smoke run, seconds a case)")
    p.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                   help="change a verdict's limit, e.g. --limit recovery_s=2 (repeatable)")
    p.set_defaults(handler=run_reliability_command)


def config_from_args(args: argparse.Namespace) -> ReliabilityConfig:
    durations = QUICK if args.quick else Durations()
    if args.soak_minutes is not None:
        durations = replace(durations, soak_minutes=args.soak_minutes)
    return ReliabilityConfig(out=Path(args.out), only=tuple(s.strip() for s in args.only.split(",") if s.strip()),
                             durations=durations, limits=parse_limits(args.limit), command=_command_line())


def run_reliability_command(args: argparse.Namespace) -> int:
    from rohde.reliability.runner import run_reliability

    for noisy in ("httpx", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    outcomes = run_reliability(config_from_args(args))
    failed = [f"{o.group}:{o.case}" for o in outcomes if o.verdict == "fail"]
    logger.info("Wrote %s: %d passed, %d failed, %d not run.", args.out,
                sum(o.verdict == "pass" for o in outcomes), len(failed), sum(o.verdict == "not run" for o in outcomes))
    return 1 if failed else 0


def _command_line() -> str:
    return " ".join(["rohde", *sys.argv[sys.argv.index("reliability"):]]) if "reliability" in sys.argv \
        else "rohde reliability"
