"""The installed distribution's version: one source, `pyproject.toml`."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("rohde")
except PackageNotFoundError:  # a source tree that was never installed
    VERSION = "0+unknown"
