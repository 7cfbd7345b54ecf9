"""Smoke test of the benchmark: a tiny configuration runs end to end and writes valid results.

Real parts only (outlet process, `rohde serve` subprocess, WebSocket client); no timing asserts,
since absolute times on a shared machine say nothing about correctness.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from rohde.bench.config import BenchConfig
from rohde.bench.runner import run_bench
from rohde.bench.tiny_package import build_tiny_package


@pytest.mark.lsl
@pytest.mark.timeout(180)
def test_bench_harness_writes_results(tmp_path: Path) -> None:
    model = build_tiny_package(tmp_path / "models" / "tiny")
    out = tmp_path / "bench"
    config = BenchConfig(model=model, out_dir=out, sections=("inference", "ingestion", "latency", "soak"),
                         latency_streams=(1,), capacity_probes=0, step_s=2.0, warmup_s=0.5, soak_s=2.0, soak_streams=1,
                         ingest_s=2.0, ingest_kinds=("ours", "pylsl_plain"), batch_sizes=(1, 2), inference_s=0.05,
                         command="pytest tests/bench/test_runner.py")
    run_bench(config)

    results = json.loads((out / "results.json").read_text())
    cpu = results["cpu"]
    assert results["gpu"] is None
    assert cpu["meta"]["command"] == "pytest tests/bench/test_runner.py"
    assert cpu["meta"]["machine"]["logical_cpus"] >= 1
    steps = cpu["latency"]["steps"]
    assert [s["n_streams"] for s in steps][:1] == [1]
    first = steps[0]
    assert first["decisions_received"] > 0
    assert first["e2e_latency_ms"]["n"] > 0 and first["e2e_latency_ms"]["p50"] > 0
    assert first["unmatched_decisions"] == 0
    assert len(first["load_avg_start"]) == len(first["load_avg_end"]) == 3 and first["outlets_cpu_cores"] >= 0
    assert first["provider"] == cpu["latency"]["stage_costs"]["inference_provider"] == "CPUExecutionProvider"
    assert cpu["latency"]["capacity_streams"] in (0, 1)
    assert cpu["soak"]["memory_samples"]
    readers = cpu["ingestion"]["results"]
    for kind in ("ours", "pylsl_plain"):  # each read the stream: about 2 s of 2048 Hz samples
        assert readers[kind]["samples_or_reads"] > 1000, readers[kind]
    rows = cpu["inference"]["rows"]
    assert [r["batch"] for r in rows] == [1, 2]
    assert cpu["inference"]["parity_max_abs"] < 1e-4
    markdown = (out / "RESULTS.md").read_text()
    assert "Decision latency" in markdown and "ONNX Runtime vs PyTorch" in markdown
    assert "provider of the servers' sessions: CPUExecutionProvider" in markdown

    # Re-measuring one section with --merge keeps the others and records the partial run.
    run_bench(replace(config, sections=("inference",), merge=True, command="pytest merge"))
    merged = json.loads((out / "results.json").read_text())["cpu"]
    assert merged["latency"] == cpu["latency"] and merged["ingestion"] == cpu["ingestion"]
    assert [r["sections"] for r in merged["meta"]["remeasured"]] == [["inference"]]
    assert "Re-measured inference" in (out / "RESULTS.md").read_text()
