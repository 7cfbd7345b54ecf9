"""The server process itself: SIGTERM while streaming (exit time, every client told with a close
frame) and a restart with the same settings (the same state comes back)."""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from typing import Any

from rohde.bench.server import ServerHandle, wait_connected
from rohde.reliability import judge
from rohde.reliability.fault_outlet import start_fault_outlet
from rohde.reliability.observe import Http, Observer, first_accepted_after, start_observer, watching
from rohde.reliability.outcome import Outcome
from rohde.reliability.rig import (
    PACKAGE_A,
    PACKAGE_B,
    TINY_CHANNELS,
    TINY_FS_HZ,
    CaseContext,
    rss_mb,
    serve,
    stream_name,
)
from rohde.server.processes import unique_id

N_CLIENTS = 3
RESTART_SETTINGS = {"ROHDE_VOTE_K": "3", "ROHDE_CONFIDENCE_THRESHOLD": "0.6"}  # not the defaults


def sigterm(ctx: CaseContext, out: Outcome) -> None:
    models = ctx.models()
    name, sid = stream_name(), unique_id("rel")
    with ExitStack() as stack:
        server = stack.enter_context(serve(ctx, model=models / PACKAGE_A, stream_name=name))
        outlet, _ = start_fault_outlet(name=name, source_id=sid, n_channels=TINY_CHANNELS, fs_hz=TINY_FS_HZ,
                                       workdir=ctx.workdir)
        stack.enter_context(outlet)
        wait_connected(server, [sid], timeout_s=30.0)
        asyncio.run(_sigterm_body(ctx, out, server))


async def _sigterm_body(ctx: CaseContext, out: Outcome, server: ServerHandle) -> None:
    lim = ctx.limits
    stop = asyncio.Event()
    started = [await start_observer(server.ws_url, stop) for _ in range(N_CLIENTS)]
    await asyncio.sleep(ctx.durations.settle_s)
    out.rss_before_mb = rss_mb(server)
    sent = time.monotonic()
    server.child.process.terminate()
    while server.child.process.poll() is None and time.monotonic() - sent < 10.0:
        await asyncio.sleep(0.01)
    exited = time.monotonic() if server.child.process.poll() is not None else None
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*(task for _, task in started))
    observers: list[Observer] = [o for o, _ in started]
    exit_s = None if exited is None else exited - sent
    out.recovery_s = None
    out.check("exits in time", exit_s is not None and exit_s <= lim.exit_s,
              f"exited {'never (within 10 s)' if exit_s is None else f'{exit_s:.2f} s'} after SIGTERM "
              f"(limit {lim.exit_s:g} s)")
    code = server.child.process.returncode
    # uvicorn shuts down gracefully, then re-raises the signal it caught: -15 is a clean SIGTERM exit too.
    out.check("clean exit code", code in (0, -15), f"exit code {code} (0, or -15 after a graceful shutdown)")
    told = [o for o in observers if o.close_code is not None and o.close_clock is not None
            and o.close_clock - sent <= max(lim.exit_s, exit_s or 0.0)]
    codes = [o.close_code if o.close_code is not None else ("no close frame" if o.closed_without_frame
                                                             else (o.error or "still open")) for o in observers]
    out.check("every client told", len(told) == len(observers), f"close frames: {codes}")
    preds = [m for o in observers for m in o.predictions()]
    judge.values(out, preds, Http(server.url))
    tail = server.child.log_tail(4000)
    joined = "every worker thread joined" in tail
    still = next((line for line in tail.splitlines() if "threads still running" in line), None)
    out.check("every worker joined", joined,
              "the server's last log line: every worker thread joined" if joined
              else (still or "no shutdown summary in the server log"))
    if "Traceback" in tail:
        out.notes.append("the server log shows a traceback at shutdown")


def restart(ctx: CaseContext, out: Outcome) -> None:
    models = ctx.models()
    name, sid = stream_name(), unique_id("rel")
    with ExitStack() as stack:
        outlet, _ = start_fault_outlet(name=name, source_id=sid, n_channels=TINY_CHANNELS, fs_hz=TINY_FS_HZ,
                                       workdir=ctx.workdir)
        stack.enter_context(outlet)
        states = []
        for attempt in range(2):
            begun = time.monotonic()
            with serve(ctx, model=models / PACKAGE_B, stream_name=name, extra=RESTART_SETTINGS) as server:
                wait_connected(server, [sid], timeout_s=30.0)
                state, first = asyncio.run(_state_of(ctx, server, sid))
                if attempt == 0:
                    out.rss_before_mb = rss_mb(server)
                else:
                    out.rss_after_mb = rss_mb(server)
                    out.recovery_s = None if first is None else round(first - begun, 2)
                states.append(state)
    out.check("same state after restart", states[0] == states[1],
              f"before: {states[0]}; after: {states[1]}" if states[0] != states[1] else f"state: {states[1]}")
    out.check("deciding again in time", out.recovery_s is not None and out.recovery_s <= ctx.limits.restart_s,
              f"process start -> first accepted decision "
              f"{'never' if out.recovery_s is None else f'{out.recovery_s:.2f} s'} (limit {ctx.limits.restart_s:g} s)")
    out.notes.append("RSS before/after are the first and the restarted process")


async def _state_of(ctx: CaseContext, server: ServerHandle, source_id: str) -> tuple[dict[str, Any], float | None]:
    """What a restart must bring back: the active model, readiness, the stream and the decision settings."""
    async with watching(server.url, server.ws_url) as watch:
        http, observer = watch.http, watch.observer
        await asyncio.sleep(ctx.durations.settle_s)
        active = await http.json("/models/active") or {}
        ready = await http.request("GET", "/ready")
        streams = await http.json("/streams") or {}
        await watch.stop()
    preds = observer.predictions()
    first = first_accepted_after(preds)
    return {
        "model": (active.get("folder"), active.get("name"), tuple(active.get("labels") or ())),
        "ready": ready.status_code if ready is not None else None,
        "stream": sorted((s.get("source_id"), s.get("state")) for s in streams.get("streams", [])
                         if s.get("source_id") == source_id),
        "decisions": sorted({(m.vote_k, m.confidence_threshold, m.model_name) for m in preds}),
    }, (first.recv_clock if first else None)
