"""Test session set-up: loopback-only LSL before any LSL call, real-data location and policy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rohde.server.settings import default_lsl_config

REPO_ROOT = Path(__file__).resolve().parents[1]
# liblsl reads its configuration once per process: set it before anything imports pylsl.
os.environ["LSLAPICFG"] = str(default_lsl_config())

FLEXEMG_DIR = Path(os.environ.get("ROHDE_FLEXEMG_DIR", REPO_ROOT.parent / "shared" / "data" / "flexemg"))


@pytest.fixture(scope="session")
def flexemg_dir() -> Path:
    """The real flexemg data; a `realdata` test fails (never skips) when it is missing."""
    if not (FLEXEMG_DIR / "data").is_dir():
        pytest.fail(f"Real data not found at {FLEXEMG_DIR}; set ROHDE_FLEXEMG_DIR to the flexemg folder.")
    return FLEXEMG_DIR
