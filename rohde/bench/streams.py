"""One measured run: `n` outlets -> the real server -> one WebSocket client per stream, summarised
as latency percentiles, loss counters, server CPU and memory (shared by the latency and soak sections)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from rohde.bench.collectors import Received, collect_replicas
from rohde.bench.config import P99_LIMIT_MS, BenchConfig, server_overrides
from rohde.bench.machine import proc_cpu_s, proc_rss_mb
from rohde.bench.outlets import OutletGroup, outlet_group, stop_outlets
from rohde.bench.server import ServerHandle, http_json, http_text, parse_metrics, running_server, wait_connected
from rohde.core.errors import RohdeError
from rohde.core.model_package import ModelMetadata

logger = logging.getLogger(__name__)


def percentiles_ms(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds of `values_s` (seconds); NaN when empty."""
    if len(values_s) == 0:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan, "n": 0}
    arr = np.asarray(values_s, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3),
            "max": round(float(arr.max()), 3), "n": int(arr.size)}


def replica_shares(source_ids: Sequence[str], replicas: int) -> list[list[str]]:
    """The streams dealt over `replicas` servers in turn (each server's `--stream-source-id` set); one share per
    server, never an empty one."""
    k = max(1, min(replicas, len(source_ids)))
    return [list(source_ids[i::k]) for i in range(k)]


def run_streams(config: BenchConfig, *, model: Path, meta: ModelMetadata, n_streams: int, duration_s: float,
                workdir: Path, sample_every_s: float = 5.0) -> dict[str, Any]:
    """One measurement: `n_streams` outlets -> the real server (or `config.replicas` servers, each serving its
    share of the streams by source_id) -> one WebSocket client per stream. CPU, memory, losses and health are the
    servers' together."""
    with outlet_group(n_streams=n_streams, n_channels=meta.n_channels, fs_hz=meta.fs_hz, chunk_ms=config.chunk_ms,
                      per_process=config.outlets_per_process, workdir=workdir) as group, ExitStack() as stack:
        shares = replica_shares(group.source_ids, config.replicas)
        servers: list[ServerHandle] = []
        for i, share in enumerate(shares):
            # Replicas each publish their decisions under a marker stream name of their own (docs/scale_out.md).
            overrides = server_overrides(config) | ({"ROHDE_MARKER_STREAM_NAME": f"RoHDE-Decisions-{i + 1}"}
                                                    if len(shares) > 1 else {})
            servers.append(stack.enter_context(running_server(
                model=model, stream_name=group.name, max_streams=len(share), workdir=workdir, overrides=overrides,
                source_ids=share if len(shares) > 1 else ())))
        ids: dict[str, str] = {}
        for server, share in zip(servers, shares, strict=True):
            ids.update(wait_connected(server, share, timeout_s=30.0 + n_streams))
        load_start = list(os.getloadavg())
        outlets_cpu = _children_cpu_s(group)
        outlets_t = time.monotonic()
        records, mem, client_errors = asyncio.run(collect_replicas(
            [(server.ws_url, [ids[sid] for sid in share], server.child.pid)
             for server, share in zip(servers, shares, strict=True)],
            duration_s + config.warmup_s, sample_every_s))
        outlet_cores = (_children_cpu_s(group) - outlets_cpu) / max(time.monotonic() - outlets_t, 1e-9)
        load_end = list(os.getloadavg())
        pushes = stop_outlets(group)
        time.sleep(0.3)  # let the servers pull and window what was pushed last
        rss_end = sum(proc_rss_mb(server.child.pid) for server in servers)
        streams: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        healths: list[dict[str, Any]] = []
        try:
            for server in servers:
                streams |= {s["stream_id"]: s for s in http_json(server.url + "/streams")["streams"]}
                for key, value in parse_metrics(http_text(server.url + "/metrics")).items():
                    metrics[key] = metrics.get(key, 0.0) + value  # per-stream series differ; totals add up
                healths.append(http_json(server.url + "/health"))
        except Exception as exc:  # an overloaded server that cannot answer has failed this step
            raise RohdeError(f"A server did not answer after the run: {exc}") from exc
    step = summarize_step(config, group=group, ids=ids, records=records, pushes=pushes, streams=streams,
                          metrics=metrics, mem=mem, rss_end=rss_end, meta=meta, health=_worst_health(healths))
    step["replicas"] = len(servers)
    step["client_errors"] = client_errors
    # What else ran: the machine's load (1, 5, 15 min) when the measurement began and ended, and the outlets'
    # own CPU, which shares the machine with the server.
    step["load_avg_start"] = [round(v, 2) for v in load_start]
    step["load_avg_end"] = [round(v, 2) for v in load_end]
    step["outlets_cpu_cores"] = round(outlet_cores, 3)
    if client_errors:
        step["realtime_ok"] = False
    return step


def _worst_health(healths: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One server's /health, or of several the first that is not ok (else the first); the provider is named only
    when every server runs on the same one."""
    worst = next((h for h in healths if h.get("status") != "ok"), healths[0])
    providers = {h.get("provider") for h in healths}
    return {**worst, "provider": providers.pop() if len(providers) == 1 else None}


def _children_cpu_s(group: OutletGroup) -> float:
    """CPU seconds used so far by the outlet processes of `group` (0 for one that already ended)."""
    total = 0.0
    for child in group.children:
        try:
            total += proc_cpu_s(child.pid)
        except OSError:
            continue
    return total


def run_step(config: BenchConfig, *, model: Path, meta: ModelMetadata, n_streams: int, duration_s: float,
             workdir: Path, sample_every_s: float = 5.0) -> dict[str, Any]:
    """`run_streams`, with a failure (streams not connected, server unresponsive) recorded as a failed step."""
    try:
        return run_streams(config, model=model, meta=meta, n_streams=n_streams, duration_s=duration_s,
                           workdir=workdir, sample_every_s=sample_every_s)
    except Exception as exc:
        logger.exception("The %d-stream run failed.", n_streams)
        nan = percentiles_ms([])
        return {"n_streams": n_streams, "failed": f"{type(exc).__name__}: {exc}", "realtime_ok": False,
                "lossless": False, "e2e_latency_ms": nan, "server_processing_ms": nan, "delivery_ms": nan,
                "server_cpu_cores": math.nan, "server_rss_mb": {"start": math.nan, "max": math.nan, "end": math.nan},
                "lost": {"missing_samples": math.nan, "gaps": math.nan, "overflows": math.nan,
                         "tail_samples_not_pulled": math.nan, "ws_dropped_messages": math.nan},
                "memory_samples": []}


def summarize_step(config: BenchConfig, *, group: OutletGroup, ids: dict[str, str], records: list[Received],
                   pushes: list[np.ndarray], streams: dict[str, Any], metrics: dict[str, float],
                   mem: list[tuple[float, float, float]], rss_end: float, meta: ModelMetadata,
                   health: dict[str, Any]) -> dict[str, Any]:
    """Latency percentiles (after the warm-up), loss, CPU and memory of one run."""
    # Where each stream's pushes are: (process index, outlet index within it).
    where: dict[str, tuple[int, int]] = {}
    for p, ready in enumerate(group.ready):
        for j, sid in enumerate(ready["source_ids"]):
            where[ids[sid]] = (p, j)
    first_seen: dict[str, float] = {}
    for r in records:
        first_seen.setdefault(r.stream_id, r.recv_clock)
    e2e, processing, delivery, unmatched = [], [], [], 0
    for r in records:
        if r.recv_clock < first_seen[r.stream_id] + config.warmup_s:
            continue
        p, j = where[r.stream_id]
        ready = group.ready[p]
        index = int(round((r.lsl_time - ready["t0"]) * ready["fs_hz"]))
        k = index // ready["chunk_samples"]
        if not 0 <= k < pushes[p].shape[1]:
            unmatched += 1
            continue
        e2e.append(r.recv_clock - pushes[p][j, k])
        processing.append(r.latency_ms / 1000.0)
        delivery.append(r.recv_wall - r.server_time)
    measured_s = (mem[-1][0] - mem[0][0]) if len(mem) > 1 else 0.0
    cpu_s = (mem[-1][2] - mem[0][2]) if len(mem) > 1 else math.nan
    missing = sum(v for k, v in metrics.items() if k.startswith("rohde_stream_missing_samples_total"))
    gaps = sum(v for k, v in metrics.items() if k.startswith("rohde_stream_gaps_total"))
    overflows = sum(v for k, v in metrics.items() if k.startswith("rohde_stream_overflows_total"))
    ws_dropped = metrics.get("rohde_ws_dropped_messages_total", 0.0)
    # The tail: did the server pull everything that was pushed before the outlets stopped?
    tail_missing = 0
    for stream_id in ids.values():
        p, j = where[stream_id]
        ready = group.ready[p]
        n_chunks = int(np.count_nonzero(pushes[p][j]))
        last_pushed = ready["t0"] + (n_chunks * ready["chunk_samples"] - 1) / ready["fs_hz"]
        last_pulled = streams.get(stream_id, {}).get("last_lsl_time") or 0.0
        tail_missing += max(0, int(round((last_pushed - last_pulled) * ready["fs_hz"])))
    hop_s = meta.hop_ms / 1000.0
    expected = len(ids) * max(0.0, config.warmup_s + (measured_s - config.warmup_s)) / hop_s if measured_s else 0
    e2e_p = percentiles_ms(e2e)
    lossless = missing == 0 and overflows == 0 and tail_missing == 0 and ws_dropped == 0
    return {
        "n_streams": len(ids),
        "measured_s": round(measured_s, 1),
        "decisions_received": len(records),
        "decisions_expected_approx": int(expected),
        "e2e_latency_ms": e2e_p,
        "server_processing_ms": percentiles_ms(processing),
        "delivery_ms": percentiles_ms(delivery),
        "unmatched_decisions": unmatched,
        "server_cpu_cores": round(cpu_s / measured_s, 3) if measured_s else math.nan,
        "server_cpu_s_per_stream_s": round(cpu_s / measured_s / len(ids), 4) if measured_s else math.nan,
        "server_rss_mb": {"start": round(mem[0][1], 1), "max": round(max(m[1] for m in mem), 1),
                          "end": round(rss_end, 1)},
        "lost": {"missing_samples": missing, "gaps": gaps, "overflows": overflows,
                 "tail_samples_not_pulled": tail_missing, "ws_dropped_messages": ws_dropped},
        "lossless": lossless,
        "realtime_ok": bool(lossless and e2e_p["n"] > 0 and e2e_p["p99"] < P99_LIMIT_MS),
        "server_health": health.get("status"),
        "provider": health.get("provider"),  # what the server's session really runs on (None without a model)
        "memory_samples": [(round(t - mem[0][0], 1), round(r, 1)) for t, r, _ in mem],
    }
