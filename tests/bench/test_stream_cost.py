"""The in-process stage costs: every stage of the server's per-stream path is timed, and the parts add up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rohde.bench.stream_cost import STAGES, format_cost, stream_cost
from rohde.bench.tiny_package import build_tiny_package

pytestmark = pytest.mark.timeout(60)


def test_stream_cost_times_every_stage(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    model = build_tiny_package(tmp_path / "tiny", weights=rng.standard_normal((16, 4)), bias=rng.standard_normal(4))
    result = stream_cost(model, n_streams=2, seconds=1.0, repeats=1)
    cost = result["ms_cpu_per_stream_s"]
    for stage in ("filter", "quality estimate", "windows (read, normalised)", "hard-fault check",
                  "inference (ONNX Runtime)", "JSON (hub)"):
        assert cost[stage] > 0, stage
    # The stages are parts of the total (what is left is the harness's own loop).
    assert sum(cost[s] for s in STAGES) <= cost["total"] * 1.05
    assert "total" in format_cost(result)
