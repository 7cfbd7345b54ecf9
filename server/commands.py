"""Command-line registration for this package (filled in as the subsystem lands)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    del subparsers


__all__ = ["register", "argparse"]
