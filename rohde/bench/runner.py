"""One `rohde bench` run: the configured sections in turn, then results.json and RESULTS.md."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rohde.bench.config import LSL_CONFIG, BenchConfig
from rohde.bench.inference import bench_inference
from rohde.bench.ingestion import bench_ingestion
from rohde.bench.latency import bench_latency
from rohde.bench.machine import machine_description
from rohde.bench.packages import resolve_model
from rohde.bench.results import write_outputs
from rohde.bench.soak import bench_soak


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run the configured sections and write bench/results.json and bench/RESULTS.md."""
    os.environ.setdefault("LSLAPICFG", str(LSL_CONFIG))
    started = time.monotonic()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rohde-bench-") as tmp:
        workdir = Path(tmp)
        model, source = resolve_model(config, workdir)
        results["meta"] = {
            "date_utc": datetime.now(UTC).isoformat(timespec="seconds"), "command": config.command,
            "machine": machine_description(), "model_source": source, "gpu": config.gpu, "label": config.label,
            "compare_to": config.compare_to,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        }
        if "inference" in config.sections:
            results["inference"] = bench_inference(config, model)
        if "ingestion" in config.sections:
            results["ingestion"] = bench_ingestion(config, model, workdir)
        if "latency" in config.sections:
            results["latency"] = bench_latency(config, model, workdir)
        if "soak" in config.sections:
            results["soak"] = bench_soak(config, model, workdir)
        results["meta"]["wall_s"] = round(time.monotonic() - started, 1)
        if os.environ.get("ROHDE_BENCH_KEEP_LOGS"):
            shutil.copytree(workdir, config.out_dir / "logs", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.npz"))
    write_outputs(results, config.out_dir, merge=config.merge)
    return results
