"""`python -m rohde.bench stream-cost`: the server's CPU per stream-second, stage by stage, in-process.

The server's own components (`WindowAssembler` with its filter, windows, hard-fault check and quality
monitor; `StreamAlignment`; `JobQueue`; `InferenceLoop` with the model's `InferenceEngine`; the hub's JSON)
take `n_streams` streams of seeded noise, one pull per hop each as the stream workers do, without LSL,
threads or WebSocket clients. Each stage is timed in thread CPU time (not wall clock: the figure stays
meaningful on a machine other jobs load), repeated, and the median repeat is reported. What it leaves out
is what only the live server has: LSL pulls, thread switches, the event loop and its sockets; the latency
section's `server_cpu_s_per_stream_s` is the live total.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.errors import ConfigError

# Stages in the order they are reported; "assembler, other" and "inference loop, other" are what the
# assembler's `push` and the loop's `process` spend outside the timed parts.
STAGES = ("filter", "quality estimate", "neighbour detector", "quality ring", "windows (read, normalised)",
          "hard-fault check", "bad-sample check", "gap check", "assembler, other", "alignment", "queue",
          "inference (ONNX Runtime)", "inference loop, other", "JSON (hub)")


def _timed(acc: Counter[str], label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[label] += time.thread_time_ns() - start
    return wrapper


def stream_cost(model: Path, *, n_streams: int = 4, seconds: float = 5.0, repeats: int = 5,
                batch: int | None = None, quality_interval_s: float | None = None) -> dict[str, Any]:
    """Thread CPU ms per stream-second by stage (median of `repeats` runs of `seconds` of stream each).
    `batch`: windows per inference run (None: every window of one hop of all streams together, as
    streams whose outlets push in step give them; 1: streams out of step)."""
    from rohde.core.model_package import load_model_package
    from rohde.core.quality_monitor import QualityThresholds
    from rohde.server.blas_threads import limit_blas_threads
    from rohde.server.hub import Hub
    from rohde.server.inference import ModelManager
    from rohde.server.inference_loop import InferenceLoop
    from rohde.server.ingest_config import IngestConfig
    from rohde.server.jobs import JobQueue, WindowJob
    from rohde.server.live_alignment import StreamAlignment
    from rohde.server.metrics import ServerMetrics
    from rohde.server.window_assembler import WindowAssembler

    if n_streams < 1 or seconds <= 0 or repeats < 1 or (batch is not None and batch < 1):
        raise ConfigError(f"stream-cost needs n_streams, seconds, repeats and batch >= 1, got {n_streams}, "
                          f"{seconds}, {repeats}, {batch}.")
    limit_blas_threads(1)  # as `rohde serve`
    package = load_model_package(model)
    meta = package.metadata
    models = ModelManager(model.parent)
    active = models.activate(model.name)
    metrics = ServerMetrics()
    acc: Counter[str] = Counter()
    jobs = JobQueue(max(256, 4 * n_streams), metrics)
    offer = _timed(acc, "queue", jobs.offer)
    hub = Hub(queue_size=64)
    client = hub.register()
    engine = active.engine
    engine.run = _timed(acc, "inference (ONNX Runtime)", engine.run)  # type: ignore[method-assign]
    loop = InferenceLoop(jobs=jobs, models=models, metrics=metrics, publishers=[_timed(acc, "JSON (hub)", hub.publish)],
                         vote_k=5, confidence_threshold=0.5, max_batch=batch or 10**6)
    process = _timed(acc, "inference loop", loop.process)
    thresholds = QualityThresholds() if quality_interval_s is None else QualityThresholds(
        quality_interval_s=quality_interval_s)
    config = IngestConfig(quality=thresholds, neighbour_thread=False)  # each stage timed in the thread it runs in
    assemblers = []
    for s in range(n_streams):
        alignment = StreamAlignment(f"s{s}", enabled=config.alignment, warmup_s=config.alignment_warmup_s,
                                    min_score=config.alignment_min_score)
        alignment.use_model(package, active.generation)
        align = _timed(acc, "alignment", alignment.process)

        def emit(job: WindowJob, align: Callable[[WindowJob], WindowJob] = align) -> None:
            offer(align(job))

        assembler = WindowAssembler(f"s{s}", config=config, metrics=metrics, emit=emit)
        assembler.use_model(package, active.generation, max_chunk=int(0.5 * meta.fs_hz))
        assembler.restart(meta.fs_hz)
        sig, quality = assembler._signal, assembler.quality
        if sig is None or quality is None:
            raise RuntimeError("The assembler has no model after use_model.")
        sig.filter.process = _timed(acc, "filter", sig.filter.process)  # type: ignore[method-assign]
        sig.windower.push = _timed(acc, "windows (read, normalised)", sig.windower.push)  # type: ignore[method-assign]
        quality.push = _timed(acc, "quality push", quality.push)  # type: ignore[method-assign]
        quality._estimate = _timed(acc, "quality estimate+", quality._estimate)  # type: ignore[method-assign]
        if quality._detector is not None:
            quality._detector.detect = _timed(acc, "neighbour detector",  # type: ignore[method-assign]
                                              quality._detector.detect)
        for name, label in (("_check_hard_faults", "hard-fault check"), ("_replace_bad_samples", "bad-sample check"),
                            ("_check_gap", "gap check")):
            setattr(assembler, name, _timed(acc, label, getattr(assembler, name)))
        assembler.push = _timed(acc, "assembler", assembler.push)  # type: ignore[method-assign]
        assemblers.append(assembler)

    rng = np.random.default_rng(0)
    data = (rng.standard_normal((int(2 * meta.fs_hz), meta.n_channels)) * 20.0).astype(np.float32)  # uV, looped
    span = len(data) - int(0.5 * meta.fs_hz)
    pushed = [0] * n_streams
    runs: list[dict[str, float]] = []
    for _ in range(repeats):
        acc.clear()
        start, begin = time.thread_time_ns(), min(pushed)
        while min(pushed) < begin + seconds * meta.fs_hz:
            for s, assembler in enumerate(assemblers):
                n = assembler.samples_until_next_window
                first = pushed[s] % span
                stamps = 100.0 + (pushed[s] + np.arange(n)) / meta.fs_hz
                assembler.push(data[first : first + n], stamps, pulled_at=time.perf_counter(), full=False)
                pushed[s] += n
            ready = []
            while not jobs.empty():
                ready.append(jobs.get_nowait())
            step = batch or max(len(ready), 1)
            for i in range(0, len(ready), step):
                process(ready[i : i + step])
            client.queue.clear()
        stream_s = (min(pushed) - begin) / meta.fs_hz * n_streams
        per = {label: ns / 1e6 / stream_s for label, ns in acc.items()}  # ms CPU per stream-second
        stage = {
            "filter": per.get("filter", 0.0),
            "quality estimate": per.get("quality estimate+", 0.0) - per.get("neighbour detector", 0.0),
            "neighbour detector": per.get("neighbour detector", 0.0),
            "quality ring": per.get("quality push", 0.0) - per.get("quality estimate+", 0.0),
            "windows (read, normalised)": per.get("windows (read, normalised)", 0.0),
            "hard-fault check": per.get("hard-fault check", 0.0),
            "bad-sample check": per.get("bad-sample check", 0.0),
            "gap check": per.get("gap check", 0.0),
            "alignment": per.get("alignment", 0.0),
            "queue": per.get("queue", 0.0),
            "inference (ONNX Runtime)": per.get("inference (ONNX Runtime)", 0.0),
            "JSON (hub)": per.get("JSON (hub)", 0.0),
        }
        inner = ("filter", "quality push", "windows (read, normalised)", "hard-fault check", "bad-sample check",
                 "gap check", "alignment", "queue")
        stage["assembler, other"] = per.get("assembler", 0.0) - sum(per.get(k, 0.0) for k in inner)
        stage["inference loop, other"] = (per.get("inference loop", 0.0) - per.get("inference (ONNX Runtime)", 0.0)
                                          - per.get("JSON (hub)", 0.0))
        stage["total"] = (time.thread_time_ns() - start) / 1e6 / stream_s
        runs.append(stage)
    median = {key: round(statistics.median(r[key] for r in runs), 3) for key in (*STAGES, "total")}
    return {"model": str(model), "n_channels": meta.n_channels, "fs_hz": meta.fs_hz, "n_streams": n_streams,
            "seconds": seconds, "repeats": repeats, "batch": batch, "quality_interval_s": thresholds.quality_interval_s,
            "ms_cpu_per_stream_s": median, "totals_per_repeat": [round(r["total"], 3) for r in runs]}


def format_cost(result: dict[str, Any]) -> str:
    """The result as a plain table (ms of CPU per stream-second, and the share of the total)."""
    cost = result["ms_cpu_per_stream_s"]
    total = cost["total"]
    lines = [f"{result['n_streams']} streams of {result['n_channels']} ch at {result['fs_hz']:g} Hz, "
             f"{result['seconds']:g} s x {result['repeats']} (median), batch {result['batch'] or 'per hop'}, "
             f"quality interval {result['quality_interval_s']:g} s; ms CPU per stream-second:"]
    for stage in STAGES:
        lines.append(f"  {cost[stage]:8.2f}  {100 * cost[stage] / total:5.1f} %  {stage}")
    lines.append(f"  {total:8.2f}  100.0 %  total (= {total / 1000:.4f} CPU s per stream-second; "
                 f"repeats {result['totals_per_repeat']})")
    return "\n".join(lines)
