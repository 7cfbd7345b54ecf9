"""The soak section: server resident memory over a long run at a fixed stream count, with its slope."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from rohde.bench.config import BenchConfig
from rohde.bench.streams import run_step

logger = logging.getLogger(__name__)


def bench_soak(config: BenchConfig, model: Path, workdir: Path) -> dict[str, Any]:
    from rohde.core.model_package import load_model_package

    meta = load_model_package(model).metadata
    logger.info("Soak: %d streams for %.0f s.", config.soak_streams, config.soak_s)
    step = run_step(config, model=model, meta=meta, n_streams=config.soak_streams, duration_s=config.soak_s,
                    workdir=workdir, sample_every_s=max(1.0, config.soak_s / 60))
    if "failed" in step:
        return step
    t = np.array([m[0] for m in step["memory_samples"]])
    rss = np.array([m[1] for m in step["memory_samples"]])
    keep = t >= min(30.0, t.max() / 4)  # after start-up allocations settle
    slope = float(np.polyfit(t[keep], rss[keep], 1)[0] * 60) if keep.sum() >= 3 else math.nan
    step["rss_slope_mb_per_min"] = round(slope, 3)
    step["rss_growth_mb_after_settle"] = round(float(rss[keep][-1] - rss[keep][0]), 1) if keep.any() else math.nan
    step["soak_s"] = config.soak_s
    return step
