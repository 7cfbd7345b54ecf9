"""`rohde demo --duration` from the command line: runs, scores every condition, summarises, exits 0."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rohde.server.processes import child_env

from .conftest import ROHDE

pytestmark = [pytest.mark.lsl, pytest.mark.slow, pytest.mark.timeout(150)]


def test_demo_runs_and_summarises(simulator_models: Path) -> None:
    result = subprocess.run(
        [ROHDE, "demo", "--duration", "15", "--models-dir", str(simulator_models), "--model", "good"],
        env=child_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "truth" in out and "decided" in out  # live lines
    for condition in ("clean", "CA", "LC"):
        assert f"{condition:>5}: accuracy" in out, out[-1500:]
    assert "processing latency per window: median" in out
    assert "per second" in out


def test_demo_without_model_fails_clearly(tmp_path: Path) -> None:
    result = subprocess.run([ROHDE, "demo", "--duration", "5", "--models-dir", str(tmp_path)],
                            env=child_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "rohde-default" in result.stderr and "Train" in result.stderr
