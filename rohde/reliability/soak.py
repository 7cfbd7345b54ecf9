"""The soak: the shipped model's shape (192 ch, 2048 Hz) on `soak_streams` bench outlets for
`soak_minutes`; memory sampled every few seconds, loss against the server's own counts."""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack

import numpy as np

from rohde.bench.outlets import outlet_group
from rohde.bench.server import ServerHandle, parse_metrics, wait_connected
from rohde.reliability import judge
from rohde.reliability.observe import watching
from rohde.reliability.outcome import Outcome
from rohde.reliability.rig import CaseContext, read_counters, rss_mb, serve
from rohde.server.processes import Child, stop_children
from rohde.server.settings import default_models_dir

SHIPPED = "rohde-default"
SEGMENT_S = 300.0  # memory is compared between the first and the last five minutes ...
SETTLE_S = 60.0  # ... after the first minute of start-up allocations (both shortened for short soaks)


def soak(ctx: CaseContext, out: Outcome) -> None:
    from rohde.core.model_package import load_model_package

    model = default_models_dir() / SHIPPED
    meta = load_model_package(model).metadata
    d = ctx.durations
    with ExitStack() as stack:
        group = stack.enter_context(outlet_group(n_streams=d.soak_streams, n_channels=meta.n_channels,
                                                 fs_hz=meta.fs_hz, chunk_ms=10.0, per_process=8,
                                                 workdir=ctx.workdir))
        server = stack.enter_context(serve(ctx, model=model, stream_name=group.name, max_streams=d.soak_streams))
        wait_connected(server, group.source_ids, timeout_s=30.0 + d.soak_streams)
        asyncio.run(_soak_body(ctx, out, server, group.children, meta.hop_ms / 1000.0))


async def _soak_body(ctx: CaseContext, out: Outcome, server: ServerHandle, outlets: list[Child],
                     hop_s: float) -> None:
    d, lim = ctx.durations, ctx.limits
    seconds = d.soak_minutes * 60.0
    samples: list[tuple[float, float, float, float]] = []  # (t since start, RSS MB, windows shed so far, queue)
    async with watching(server.url, server.ws_url) as watch:
        http, observer = watch.http, watch.observer
        start = time.monotonic()
        while (now := time.monotonic()) - start < seconds:
            metrics = await http.request("GET", "/metrics")
            parsed = parse_metrics(metrics.text) if metrics is not None else {}
            shed_now = sum(v for k, v in parsed.items() if k.startswith("rohde_windows_shed_total")) if parsed \
                else float("nan")
            samples.append((now - start, rss_mb(server), shed_now,
                            parsed.get("rohde_inference_queue_depth", float("nan"))))
            await asyncio.sleep(min(d.rss_every_s, max(0.0, seconds - (time.monotonic() - start))))
        samples.append((time.monotonic() - start, rss_mb(server), samples[-1][2] if samples else float("nan"),
                        samples[-1][3] if samples else float("nan")))
        end = time.monotonic()
        health = await http.json("/health")
        await asyncio.to_thread(stop_children, outlets)
        await asyncio.sleep(2.0)
        counters = await read_counters(http)
        await watch.stop()
    preds = observer.predictions()
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    seg = min(SEGMENT_S, seconds / 4)
    settle = min(SETTLE_S, seconds / 4)
    first = rss[(t >= settle) & (t <= settle + seg)]
    last = rss[t >= t[-1] - seg]
    growth = float(last.mean() - first.mean()) if first.size and last.size else float("nan")
    out.rss_before_mb, out.rss_after_mb = round(float(first.mean()), 1), round(float(last.mean()), 1)
    out.check("memory flat", bool(np.isfinite(growth)) and growth <= lim.soak_rss_growth_mb,
              f"mean RSS {first.mean():.1f} MB ({settle:.0f}-{settle + seg:.0f} s) -> {last.mean():.1f} MB "
              f"(last {seg:.0f} s): {growth:+.1f} MB (limit +{lim.soak_rss_growth_mb:g} MB); "
              f"{len(samples)} samples every {d.rss_every_s:g} s")
    queue = np.array([s[3] for s in samples])
    q_first, q_last = queue[(t >= settle) & (t <= settle + seg)], queue[t >= t[-1] - seg]
    q_growth = float(np.mean(q_last) - np.mean(q_first)) if q_first.size and q_last.size else float("nan")
    out.check("queue does not grow", bool(np.isfinite(q_growth)) and q_growth <= lim.queue_growth,
              f"inference-queue depth: max {np.nanmax(queue) if np.isfinite(queue).any() else float('nan'):.0f}, "
              f"mean {np.mean(q_first):.2f} ({settle:.0f}-{settle + seg:.0f} s) -> {np.mean(q_last):.2f} "
              f"(last {seg:.0f} s): {q_growth:+.2f} windows (limit +{lim.queue_growth:g})")
    judge.values(out, preds, http)
    judge.loss(out, preds, counters)
    errors = (health or {}).get("errors") or {}
    out.check("no worker error", bool(health) and not errors, f"/health errors: {errors or 'none'}")
    shed_series = np.array([s[2] for s in samples])
    shed_first = float(shed_series[t <= seg][-1] - shed_series[0]) if (t <= seg).any() else float("nan")
    shed_last = float(shed_series[-1] - shed_series[t >= t[-1] - seg][0])
    expected = d.soak_streams * (end - start) / hop_s
    out.notes.append(f"ran {d.soak_minutes:g} min at {d.soak_streams} streams (192 ch, 2048 Hz, shipped model)")
    if counters is not None:
        out.notes.append(f"decisions received {len(preds)}, windows processed {counters.processed}, cut "
                         f"{counters.emitted}, about {expected:.0f} expected in real time; shed {counters.shed} "
                         f"({shed_first:.0f} in the first {seg:.0f} s, {shed_last:.0f} in the last)")
