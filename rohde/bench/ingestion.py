"""The ingestion section: CPU per stream-second of readers of one outlet, each in its own process.

`run_ingest_consumer` is the child's body (`python -m rohde.bench ingest`): our `StreamWorker`,
MNE-LSL's `StreamLSL` or a plain pylsl loop reads the stream and writes its CPU cost to a file.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rohde.bench.config import INGEST_KINDS, LSL_CONFIG, BenchConfig
from rohde.bench.machine import proc_cpu_s, proc_rss_mb
from rohde.bench.outlets import outlet_group, stop_outlets
from rohde.core.errors import ConfigError, RohdeError
from rohde.server.processes import start_child

logger = logging.getLogger(__name__)


def run_ingest_consumer(*, kind: str, name: str, source_id: str, seconds: float, warmup_s: float, model: Path,
                        result_file: Path, pull_interval_ms: float | None = None,
                        quality_interval_s: float | None = None) -> None:
    """Read the stream `source_id` with one ingestion implementation; write its CPU per stream-second."""
    from rohde.core.model_package import load_model_package

    package = load_model_package(model)
    meta = package.metadata
    stop = threading.Event()
    counter = {"samples": 0}
    threads: list[threading.Thread] = []
    if kind == "ours":
        from rohde.core.quality_monitor import QualityThresholds
        from rohde.server.blas_threads import limit_blas_threads
        from rohde.server.inference import ModelManager
        from rohde.server.ingest_config import IngestConfig
        from rohde.server.jobs import JobQueue
        from rohde.server.lsl_inlet import StreamQuery, resolve
        from rohde.server.metrics import ServerMetrics
        from rohde.server.stream_worker import StreamState, StreamWorker

        limit_blas_threads()  # as `rohde serve` does

        ingest = IngestConfig(lsl_config=LSL_CONFIG)
        if pull_interval_ms is not None:
            ingest = replace(ingest, pull_interval_ms=pull_interval_ms)
        if quality_interval_s is not None:
            ingest = replace(ingest, quality=QualityThresholds(quality_interval_s=quality_interval_s))

        models = ModelManager(model.parent)
        models.activate(model.name)
        metrics = ServerMetrics()
        jobs = JobQueue(100_000, metrics)
        query = StreamQuery(name=name, source_id=source_id)
        worker = StreamWorker("bench", query=query, models=models, jobs=jobs, metrics=metrics,
                              config=ingest, announce=lambda *_: None)
        infos = resolve(query, timeout_s=5.0, lsl_config=LSL_CONFIG)
        if not infos:
            raise RohdeError(f"Stream {source_id!r} not found.")
        worker.attach(infos[0])
        worker.start()

        def drain() -> None:  # stands in for the inference thread: takes the windows, nothing more
            while not stop.is_set():
                try:
                    jobs.get(timeout=0.1)
                except queue.Empty:
                    continue

        threads.append(threading.Thread(target=drain, daemon=True))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while worker.state != StreamState.CONNECTED and time.monotonic() < deadline:
            time.sleep(0.05)

        def samples() -> int:
            if worker.error:
                raise RohdeError(f"Our stream worker failed: {worker.error}")
            return worker.samples_received

        cleanup = worker.stop
    elif kind == "mne_lsl":
        try:
            from mne_lsl.stream import StreamLSL
        except ImportError as exc:
            raise RohdeError("mne-lsl is not installed: `make bench` installs it (the bench extra, "
                             "`pip install -c constraints.txt -e '.[bench]'`).") from exc
        import mne

        mne.set_log_level("WARNING")
        pre = package.preprocessing
        stream = StreamLSL(bufsize=2.0, name=name, stype="EMG", source_id=source_id)
        stream.connect(acquisition_delay=0.001)
        low, high = pre.effective_band_hz
        stream.filter(low, high, picks="all",
                      iir_params={"order": pre.bandpass_order, "ftype": "butter", "output": "sos"})
        freqs = pre.notch_frequencies()
        for freq in freqs:  # one causal IIR notch per frequency, as our chain has
            stream.notch_filter(float(freq), picks="all", notch_widths=float(freq) / pre.notch_q)
        win = meta.window_ms / 1000.0

        def reader() -> None:  # a window every hop, as the server's windower delivers
            while not stop.is_set():
                stream.get_data(winsize=win)
                counter["samples"] += 1
                stop.wait(meta.hop_ms / 1000.0)

        threads.append(threading.Thread(target=reader, daemon=True))
        threads[-1].start()

        def samples() -> int:  # windows read (MNE-LSL counts no samples for us)
            return counter["samples"]

        cleanup = stream.disconnect
    elif kind in ("pylsl_sosfilt", "pylsl_plain", "pylsl_wait"):
        from rohde.core.preprocessing import StreamFilter
        from rohde.server.lsl_inlet import import_pylsl

        pylsl = import_pylsl(LSL_CONFIG)
        infos = pylsl.resolve_bypred(f"source_id='{source_id}'", 0, 5.0)
        inlet = pylsl.StreamInlet(infos[0], max_buflen=10)
        inlet.open_stream(timeout=5.0)
        buf = np.zeros((int(meta.fs_hz), meta.n_channels), dtype=np.float32)
        filt = StreamFilter(package.preprocessing, meta.n_channels) if kind != "pylsl_plain" else None
        wait = kind == "pylsl_wait"

        def loop() -> None:  # poll every 1 ms, or wait in liblsl for the next chunk
            while not stop.is_set():
                if wait:
                    _, stamps = inlet.pull_chunk(timeout=0.1, max_samples=len(buf), dest_obj=buf, min_samples=1)
                else:
                    _, stamps = inlet.pull_chunk(timeout=0.0, max_samples=len(buf), dest_obj=buf)
                if len(stamps):
                    counter["samples"] += len(stamps)
                    if filt is not None:
                        filt.process(buf[: len(stamps)])
                if not wait:
                    time.sleep(0.001)

        threads.append(threading.Thread(target=loop, daemon=True))
        threads[-1].start()

        def samples() -> int:
            return counter["samples"]

        cleanup = inlet.close_stream
    else:
        raise ConfigError(f"Unknown ingestion kind {kind!r}; choose from {list(INGEST_KINDS)}.")
    time.sleep(warmup_s)
    s0, c0, w0 = samples(), proc_cpu_s(os.getpid()), time.monotonic()
    time.sleep(seconds)
    s1, c1, w1 = samples(), proc_cpu_s(os.getpid()), time.monotonic()
    stop.set()
    for t in threads:
        t.join(2.0)
    cleanup()
    wall = w1 - w0
    if s1 == s0:  # a reader that got nothing measured nothing: refuse rather than report its idle CPU
        raise RohdeError(f"Ingestion reader {kind!r} received nothing in {seconds:.0f} s.")
    result_file.write_text(json.dumps({
        "kind": kind, "cpu_s": c1 - c0, "wall_s": wall, "cpu_s_per_stream_s": (c1 - c0) / wall,
        "samples_or_reads": s1 - s0, "rss_mb": proc_rss_mb(os.getpid()),
    }))


def bench_ingestion(config: BenchConfig, model: Path, workdir: Path) -> dict[str, Any]:
    """Each configured reader in turn on one outlet (and ours with the tuned settings, when given)."""
    from rohde.core.model_package import load_model_package

    meta = load_model_package(model).metadata
    results: dict[str, Any] = {}
    with outlet_group(n_streams=1, n_channels=meta.n_channels, fs_hz=meta.fs_hz, chunk_ms=config.chunk_ms,
                      per_process=1, workdir=workdir) as group:
        runs: list[tuple[str, str, list[str]]] = [(kind, kind, []) for kind in config.ingest_kinds]
        tuned: list[str] = []
        if config.pull_interval_ms is not None:
            tuned += ["--pull-interval-ms", str(config.pull_interval_ms)]
        if config.quality_interval_s is not None:
            tuned += ["--quality-interval-s", str(config.quality_interval_s)]
        if tuned:
            runs.insert(1, ("ours_tuned", "ours", tuned))
        for label, kind, extra in runs:
            result_file = workdir / f"ingest-{label}.json"
            log = workdir / f"ingest-{label}.log"
            cmd = [sys.executable, "-m", "rohde.bench", "ingest", "--kind", kind, "--name", group.name,
                   "--source-id", group.source_ids[0], "--seconds", str(config.ingest_s), "--warmup-s", "3",
                   "--model", str(model), "--result-file", str(result_file), *extra]
            logger.info("Ingestion: %s for %.0f s.", label, config.ingest_s)
            with start_child(cmd, log=log) as consumer:
                consumer.process.wait(timeout=config.ingest_s + 120)
            if result_file.exists():
                results[label] = json.loads(result_file.read_text())
                results[label]["settings"] = " ".join(extra) or "defaults"
            else:
                results[label] = {"error": log.read_text()[-1500:]}
            logger.info("  %s", results[label])
        stop_outlets(group)
    ours = results.get("ours", {}).get("cpu_s_per_stream_s")
    ours_tuned = results.get("ours_tuned", {}).get("cpu_s_per_stream_s")
    mne = results.get("mne_lsl", {}).get("cpu_s_per_stream_s")
    return {
        "stream": f"{meta.n_channels} ch float32 at {meta.fs_hz:g} Hz, chunks of {config.chunk_ms:g} ms",
        "seconds_each": config.ingest_s, "order": "consumers one after another on the same outlet",
        "ours_settings": "StreamWorker: pulls that wait in liblsl for the samples missing until the next window "
                         "end, into a preallocated buffer; gap check, "
                         "quality monitor, StreamFilter (band-pass + notches), windower, normalisation; windows "
                         "taken by a thread that discards them",
        "mne_lsl_settings": "StreamLSL(bufsize=2 s), acquisition_delay 1 ms, same band-pass (Butterworth SOS) and "
                            "notches, get_data(winsize=window) every hop",
        "results": results,
        "ratio_ours_over_mne_lsl": round(ours / mne, 3) if ours and mne else None,
        "ratio_ours_tuned_over_mne_lsl": round(ours_tuned / mne, 3) if ours_tuned and mne else None,
    }
