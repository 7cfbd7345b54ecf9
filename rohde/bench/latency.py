"""The latency section: decision latency per stream count, capacity, and per-stage costs."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rohde.bench.config import P99_LIMIT_MS, BenchConfig, server_overrides
from rohde.bench.streams import run_step
from rohde.core.errors import RohdeError

logger = logging.getLogger(__name__)


def bench_latency(config: BenchConfig, model: Path, workdir: Path) -> dict[str, Any]:
    """A latency table per configured stream count, then capacity probes bisecting pass and failure."""
    from rohde.core.model_package import load_model_package

    meta = load_model_package(model).metadata
    steps: list[dict[str, Any]] = []
    for n in config.latency_streams:
        logger.info("Latency: %d streams for %.0f s.", n, config.step_s)
        steps.append(run_step(config, model=model, meta=meta, n_streams=n, duration_s=config.step_s,
                              workdir=workdir))
        logger.info("  %s", _step_line(steps[-1]))
    for _ in range(config.capacity_probes):
        capacity, first_fail = capacity_of(steps)
        if first_fail is None:
            n = max(capacity + 1, capacity * 3 // 2)
        elif first_fail - capacity <= 1:
            break
        else:
            n = (capacity + first_fail) // 2
        logger.info("Capacity probe: %d streams for %.0f s.", n, config.step_s)
        steps.append(run_step(config, model=model, meta=meta, n_streams=n, duration_s=config.step_s,
                              workdir=workdir))
        logger.info("  %s", _step_line(steps[-1]))
    capacity, _ = capacity_of(steps)
    tried = sorted(s["n_streams"] for s in steps)
    stages = stage_costs(model, chunk_ms=config.chunk_ms,
                         providers=["CUDAExecutionProvider", "CPUExecutionProvider"] if config.gpu else None,
                         require_gpu=config.gpu)
    # What the servers' sessions really ran on, from their /health (steps that failed report none).
    providers = sorted({s["provider"] for s in steps if s.get("provider")})
    if config.gpu and providers != ["CUDAExecutionProvider"]:
        raise RohdeError(f"--gpu: the server ran on {providers or 'no provider'}, not on CUDAExecutionProvider.")
    return {
        "model": str(model), "n_channels": meta.n_channels, "fs_hz": meta.fs_hz, "window_ms": meta.window_ms,
        "hop_ms": meta.hop_ms, "chunk_ms": config.chunk_ms, "server_overrides": server_overrides(config),
        "pull_interval_ms": config.pull_interval_ms or 2.0, "step_s": config.step_s, "warmup_s": config.warmup_s,
        "replicas": config.replicas,
        "steps": steps, "capacity_streams": capacity, "capacity_tried": tried, "p99_limit_ms": P99_LIMIT_MS,
        "stage_costs": stages, "server_providers": providers,
    }


def capacity_of(steps: Sequence[dict[str, Any]]) -> tuple[int, int | None]:
    """(largest count that passed with every smaller count tried also passing, smallest failing count)."""
    capacity, first_fail = 0, None
    for step in sorted(steps, key=lambda s: s["n_streams"]):
        if step["realtime_ok"] and first_fail is None:
            capacity = step["n_streams"]
        elif not step["realtime_ok"] and first_fail is None:
            first_fail = step["n_streams"]
    return capacity, first_fail


def _step_line(step: dict[str, Any]) -> str:
    e = step["e2e_latency_ms"]
    return (f"{step['n_streams']} streams: e2e p50 {e['p50']} p95 {e['p95']} p99 {e['p99']} ms, "
            f"server CPU {step['server_cpu_cores']} cores, RSS {step['server_rss_mb']['end']} MB, "
            f"lossless {step['lossless']}, realtime {step['realtime_ok']}")


def stage_costs(model: Path, *, chunk_ms: float, seconds: float = 1.0,
                providers: Sequence[str] | None = None, require_gpu: bool = False) -> dict[str, Any]:
    """Median per-window cost in ms of preprocessing (filter + windows + normalisation), inference
    (batch of 1, the server's engine) and message building + JSON serialisation, measured in-process
    with the server's own components."""
    from rohde.core.model_package import load_model_package
    from rohde.core.preprocessing import StreamFilter
    from rohde.core.windows import StreamWindower
    from rohde.server.decisions import DecisionSmoother
    from rohde.server.inference import InferenceEngine
    from rohde.server.messages import PredictionMessage

    package = load_model_package(model)
    meta = package.metadata
    hop = package.windows.hop_samples(meta.fs_hz)
    chunk = max(1, int(round(chunk_ms * meta.fs_hz / 1000.0)))
    data = (np.random.default_rng(0).standard_normal((int(meta.fs_hz * 2), meta.n_channels)) * 20).astype(np.float32)
    filt = StreamFilter(package.preprocessing, meta.n_channels)
    windower = StreamWindower(meta.n_channels, meta.window_samples, hop)
    scale = np.asarray(package.normalization.scale_uv, dtype=np.float32)
    n_windows, t_pre = 0, 0.0
    pos = 0
    windows: list[np.ndarray] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or n_windows < 20:
        block = data[pos % (len(data) - chunk) : pos % (len(data) - chunk) + chunk]
        pos += chunk
        t = time.perf_counter()
        ready = windower.push(filt.process(block), scale=scale)  # normalised as the server's windows are
        windows.extend(window for _, window in ready)
        t_pre += time.perf_counter() - t
        n_windows += len(ready)
    engine = InferenceEngine(package, providers=providers, require_gpu=require_gpu)
    times = []
    for w in windows[:200]:
        t = time.perf_counter()
        probs = engine.run(w[None])
        times.append(time.perf_counter() - t)
    smoother = DecisionSmoother(k=5, confidence_threshold=0.5)
    ser = []
    for _ in range(200):
        t = time.perf_counter()
        d = smoother.update(probs[0], input_reject_reason=None)
        PredictionMessage(stream_id="s", seq=1, lsl_time=1.0, server_time=time.time(),
                          gesture=meta.labels[d.gesture_index], gesture_index=d.gesture_index, confidence=d.confidence,
                          window_gesture=meta.labels[d.window_index], probabilities=[float(p) for p in probs[0]],
                          labels=list(meta.labels), rejected=d.rejected, reject_reason=d.reject_reason, vote_k=5,
                          confidence_threshold=0.5, latency_ms=1.0, model_name=meta.name,
                          model_version=meta.version, model_generation=1, bad_channels=[],
                          condition_flags=[]).model_dump_json()
        ser.append(time.perf_counter() - t)
    return {
        "preprocessing_ms_per_window": round(t_pre / max(n_windows, 1) * 1000, 4),
        "inference_ms_batch1": round(statistics.median(times) * 1000, 4),
        "decision_and_serialisation_ms": round(statistics.median(ser) * 1000, 4),
        "chunk_ms": chunk_ms, "inference_provider": engine.provider,
    }
