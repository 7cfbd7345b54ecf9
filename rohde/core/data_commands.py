"""`rohde data ...`: simulate, inspect and plot recordings."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="simulate, inspect and plot recordings")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    del data_sub


__all__ = ["register", "argparse"]
