"""RESULTS.md puts a run beside the stored run it names (`--compare-to`), with each step's load average."""

from __future__ import annotations

from typing import Any

from rohde.bench.markdown import render_markdown


def _step(n: int, p99: float, ok: bool, load: float) -> dict[str, Any]:
    pct = {"p50": 5.0, "p95": 9.0, "p99": p99, "max": p99 + 1, "n": 100}
    return {"n_streams": n, "e2e_latency_ms": pct, "server_processing_ms": pct, "delivery_ms": pct,
            "server_cpu_cores": 0.5, "outlets_cpu_cores": 0.2, "server_rss_mb": {"end": 300.0},
            "load_avg_start": [load, 1.0, 1.0], "load_avg_end": [load + 0.5, 1.0, 1.0],
            "lost": {"missing_samples": 0, "gaps": 0, "overflows": 0, "tail_samples_not_pulled": 0,
                     "ws_dropped_messages": 0}, "realtime_ok": ok}


def _run(label: str, compare_to: str, steps: list[dict[str, Any]], capacity: int) -> dict[str, Any]:
    machine = {"cpu": "x", "logical_cpus": 2, "memory_gb": 1.0, "load_avg_1_5_15": [1.0, 1.0, 1.0], "python": "3",
               "versions": {}}
    latency = {"n_channels": 192, "fs_hz": 2048.0, "window_ms": 200.0, "hop_ms": 50.0, "chunk_ms": 10.0,
               "step_s": 25.0, "warmup_s": 3.0, "steps": steps, "capacity_streams": capacity,
               "capacity_tried": sorted(s["n_streams"] for s in steps), "p99_limit_ms": 50.0,
               "stage_costs": {"preprocessing_ms_per_window": 1.0, "inference_ms_batch1": 0.3,
                               "decision_and_serialisation_ms": 0.02}}
    meta = {"date_utc": "d", "command": "c", "machine": machine, "model_source": "m", "label": label,
            "compare_to": compare_to}
    return {"meta": meta, "latency": latency}


def test_a_run_is_shown_beside_the_run_it_compares_to() -> None:
    before = _run("before", "", [_step(8, 20.0, True, 1.2), _step(20, 900.0, False, 2.1)], 8)
    after = _run("after", "before", [_step(20, 30.0, True, 1.9), _step(8, 10.0, True, 1.3)], 20)
    text = render_markdown({"cpu": None, "gpu": None, "before": before, "after": after})
    assert "### Before (`before`) and after (`after`)" in text
    assert "Capacity before / after: 8 / 20 streams" in text
    rows = [line for line in text.splitlines() if line.startswith("| 20 | ")]
    assert any("900.0 / 30.0" in row and "2.1 / 2.6; 1.9 / 2.4" in row and "no / yes" in row for row in rows)
    # Each step's own table row carries its outlets' CPU and the load average.
    assert any("| 0.5 | 0.2 | 1.9 / 2.4 |" in row for row in rows)
