"""Stream faults: the outlet killed and restarted, stalled, hung, drifting, jittered, bursting,
skipping samples, sending NaN, Inf, huge, zero or saturated samples, or shaped unlike the model.

Every case runs the tiny amplitude-sensitive package (16 ch, 1 kHz), so on the outlets' noise the
truth is "rest" and a confident other class, or an accepted decision on garbage input, is unjustified.
"""

from __future__ import annotations

import asyncio
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass

from rohde.bench.server import ServerHandle, wait_connected
from rohde.reliability import judge
from rohde.reliability.fault_outlet import SIGNAL_FAULTS, FaultSpec, start_fault_outlet, trigger_fault
from rohde.reliability.observe import Seen, first_accepted_after, max_silence_s, watching
from rohde.reliability.outcome import Outcome
from rohde.reliability.rig import (
    PACKAGE_A,
    TINY_CHANNELS,
    TINY_FS_HZ,
    WINDOW_MS,
    CaseBody,
    CaseContext,
    read_counters,
    rss_mb,
    serve,
    stream_name,
    wait_state,
)
from rohde.server.processes import Child, unique_id

HOP_S = 0.05
WINDOW_S = WINDOW_MS[PACKAGE_A] / 1000.0
DRAIN_S = 1.0  # after the outlets stop, for the last windows to run


@dataclass
class Live:
    """One server with one outlet, during a case."""

    server: ServerHandle
    outlet: Child
    info: dict[str, object]
    name: str
    source_id: str


def start_live(ctx: CaseContext, stack: ExitStack, fault: FaultSpec, *,
               n_channels: int = TINY_CHANNELS) -> Live:
    name, sid = stream_name(), unique_id("rel")
    server = stack.enter_context(serve(ctx, model=ctx.models() / PACKAGE_A, stream_name=name))
    outlet, info = start_fault_outlet(name=name, source_id=sid, n_channels=n_channels, fs_hz=TINY_FS_HZ,
                                      workdir=ctx.workdir, fault=fault)
    stack.enter_context(outlet)
    return Live(server, outlet, info, name, sid)


def on_noise_not_rest(predictions: list[Seen]) -> list[Seen]:
    """Accepted decisions of another class than rest: unjustified on the outlets' noise."""
    return [m for m in predictions if not m.rejected and (m.window_gesture != "rest" or m.gesture != "rest")]


def on_faulty_input(predictions: list[Seen], start_lsl: float, end_lsl: float, detect_s: float) -> list[Seen]:
    """Accepted decisions whose window holds more than `detect_s` of faulty samples (a window with
    less, at either edge of the fault, is mostly clean input or too early for any detector)."""
    def overlap(m: Seen) -> float:
        return min(m.lsl_time, end_lsl) - max(m.lsl_time - WINDOW_S, start_lsl)

    return [m for m in predictions if not m.rejected and overlap(m) > detect_s]


def signal_case(kind: str) -> CaseBody:
    """NaN, Inf, huge, zero, saturated, gap, burst or stall for a while, then clean noise again."""

    def run(ctx: CaseContext, out: Outcome) -> None:
        d = ctx.durations
        length = {"gap": d.gap_s, "stall": d.stall_s, "burst": 1.0}.get(kind, d.fault_s)
        with ExitStack() as stack:
            live = start_live(ctx, stack, FaultSpec(kind, length))
            wait_connected(live.server, [live.source_id], timeout_s=30.0)
            asyncio.run(_signal_body(ctx, out, live, kind, length))

    return run


async def _signal_body(ctx: CaseContext, out: Outcome, live: Live, kind: str, length: float) -> None:
    d, lim = ctx.durations, ctx.limits
    async with watching(live.server.url, live.server.ws_url) as watch:
        http, observer = watch.http, watch.observer
        await asyncio.sleep(d.settle_s)
        before = rss_mb(live.server)
        times = await asyncio.to_thread(trigger_fault, live.outlet, live.info)
        start, end = times["fault_start_lsl"], times["fault_end_lsl"]
        await asyncio.sleep(max(0.0, end - time.monotonic()) + d.after_s)
        state = await read_counters(http)
        await asyncio.to_thread(live.outlet.stop)
        await asyncio.sleep(DRAIN_S)
        counters = await read_counters(http)
        after = rss_mb(live.server)
        await watch.stop()
        preds = observer.predictions()
        judge.values(out, preds, http)
        judge.loss(out, preds, counters)
        judge.memory(out, before, after, lim.rss_growth_mb)
        judge.recovery(out, first_accepted_after(preds, lsl_time=end), end, lim.recovery_s,
                       "fault end -> first accepted decision")
        not_rest = on_noise_not_rest(preds)
        faulty = on_faulty_input(preds, start, end, lim.detect_s) if kind in SIGNAL_FAULTS else []
        where = (f" (windows ending {faulty[0].lsl_time - start:+.2f} to {faulty[-1].lsl_time - start:+.2f} s from "
                 "the fault start)") if faulty else ""
        out.check("no unjustified confident decision", not not_rest and not faulty,
                  f"{len(faulty)} accepted decisions on windows holding more than {lim.detect_s:g} s of faulty "
                  f"input{where}; {len(not_rest)} accepted decisions other than 'rest' on noise")
        connected = state is not None and list(state.states.values()) == ["connected"]
        out.check("one stream, connected again", connected,
                  f"streams after the fault: {state.states if state else 'unreadable'}")
        reasons = sorted({m.reject_reason for m in preds if m.rejected and m.reject_reason
                          and start <= m.lsl_time <= end + WINDOW_S})
        out.notes.append(f"reject reasons during the fault: {', '.join(map(str, reasons)) or 'none'}")
        if counters is not None:
            out.notes.append(f"counted: {counters.gaps} gaps, {counters.missing_samples} missing samples, "
                             f"{counters.nonfinite_samples} non-finite samples")
            if kind == "gap":
                expected = length * TINY_FS_HZ
                out.check("the gap is counted", abs(counters.missing_samples - expected) <= 0.1 * expected,
                          f"{counters.missing_samples} missing samples counted for {expected:.0f} skipped")
            if kind == "burst":
                out.check("nothing counted missing", counters.missing_samples == 0,
                          f"{counters.missing_samples} samples counted missing after a burst that lost none")
        if kind == "stall":
            lost = observer.events("stream_lost", start)
            out.check("reported lost", bool(lost) and lost[0].recv_clock - start <= lim.lost_after_s,
                      "stream_lost " + (f"{lost[0].recv_clock - start:.2f} s after the stall began" if lost
                                        else "never announced") + f" (limit {lim.lost_after_s:g} s)")


def timing_case(*, ppm: float = 0.0, jitter_ms: float = 0.0) -> CaseBody:
    """A drifting clock or jittered pushes for `drift_s`: decisions keep coming, nothing counted lost."""

    def run(ctx: CaseContext, out: Outcome) -> None:
        with ExitStack() as stack:
            live = start_live(ctx, stack, FaultSpec("none", ppm=ppm, jitter_ms=jitter_ms))
            wait_connected(live.server, [live.source_id], timeout_s=30.0)
            asyncio.run(_timing_body(ctx, out, live))

    return run


async def _timing_body(ctx: CaseContext, out: Outcome, live: Live) -> None:
    d, lim = ctx.durations, ctx.limits
    async with watching(live.server.url, live.server.ws_url) as watch:
        http, observer = watch.http, watch.observer
        before = rss_mb(live.server)
        start = time.monotonic()
        await asyncio.sleep(d.drift_s)
        end = time.monotonic()
        state = await read_counters(http)
        await asyncio.to_thread(live.outlet.stop)
        await asyncio.sleep(DRAIN_S)
        counters = await read_counters(http)
        after = rss_mb(live.server)
        await watch.stop()
        preds = observer.predictions()
        during = [m for m in preds if start <= m.recv_clock <= end]
        judge.values(out, preds, http)
        judge.loss(out, preds, counters)
        judge.memory(out, before, after, lim.rss_growth_mb)
        judge.delivery(out, during, n_streams=1, seconds=end - start, hop_s=HOP_S, share=lim.min_delivery)
        missing = counters.missing_samples if counters else -1
        out.check("no sample counted missing", missing == 0,
                  f"{missing} samples counted missing ({counters.gaps if counters else '?'} gaps) where none were lost")
        lost = observer.events("stream_lost", start, end)
        connected = state is not None and list(state.states.values()) == ["connected"]
        out.check("stays connected", connected and not lost,
                  f"{len(lost)} stream_lost events; states {state.states if state else 'unreadable'}")
        out.notes.append(f"longest silence {max_silence_s(during, start, end):.2f} s")


def restart_case(*, new_source_id: bool) -> CaseBody:
    """The outlet process killed (SIGKILL), then a new one with the same or a new source_id."""

    def run(ctx: CaseContext, out: Outcome) -> None:
        with ExitStack() as stack:
            live = start_live(ctx, stack, FaultSpec())
            wait_connected(live.server, [live.source_id], timeout_s=30.0)
            asyncio.run(_restart_body(ctx, out, live, stack, new_source_id))

    return run


async def _restart_body(ctx: CaseContext, out: Outcome, live: Live, stack: ExitStack, new_source_id: bool) -> None:
    d, lim = ctx.durations, ctx.limits
    async with watching(live.server.url, live.server.ws_url) as watch:
        http, observer = watch.http, watch.observer
        await asyncio.sleep(d.settle_s)
        before = rss_mb(live.server)
        stream_ids = {m.stream_id for m in observer.predictions()}
        live.outlet.process.kill()
        await asyncio.sleep(d.stall_s)
        sid = unique_id("rel") if new_source_id else live.source_id
        outlet, _ = await asyncio.to_thread(start_fault_outlet, name=live.name, source_id=sid,
                                            n_channels=TINY_CHANNELS, fs_hz=TINY_FS_HZ, workdir=ctx.workdir)
        stack.enter_context(outlet)
        restarted = time.monotonic()
        await asyncio.sleep(d.after_s)
        state = await read_counters(http)
        await asyncio.to_thread(outlet.stop)
        await asyncio.sleep(DRAIN_S)
        counters = await read_counters(http)
        after = rss_mb(live.server)
        await watch.stop()
        preds = observer.predictions()
        judge.values(out, preds, http)
        judge.loss(out, preds, counters)
        judge.memory(out, before, after, lim.rss_growth_mb)
        judge.recovery(out, first_accepted_after(preds, recv_clock=restarted), restarted, lim.recovery_s,
                       "new outlet ready -> first accepted decision")
        later = {m.stream_id for m in preds if m.recv_clock >= restarted}
        out.check("same stream id", later == stream_ids,
                  f"decisions before under {sorted(map(str, stream_ids))}, after under {sorted(map(str, later))}")
        states = state.states if state else {}
        out.check("one stream, connected", list(states.values()) == ["connected"], f"streams: {states}")
        out.notes.append(f"lost/recovered events: {len(observer.events('stream_lost', end=restarted))}/"
                         f"{len(observer.events('stream_recovered', end=restarted + d.after_s))}")


def hang_case(ctx: CaseContext, out: Outcome) -> None:
    """The outlet process stopped (SIGSTOP) for `stall_s`, then continued (SIGCONT)."""
    with ExitStack() as stack:
        live = start_live(ctx, stack, FaultSpec())
        wait_connected(live.server, [live.source_id], timeout_s=30.0)
        asyncio.run(_hang_body(ctx, out, live))


async def _hang_body(ctx: CaseContext, out: Outcome, live: Live) -> None:
    d, lim = ctx.durations, ctx.limits
    async with watching(live.server.url, live.server.ws_url) as watch:
        http, observer = watch.http, watch.observer
        await asyncio.sleep(d.settle_s)
        before = rss_mb(live.server)
        hung = time.monotonic()
        live.outlet.process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(d.stall_s)
        finally:
            live.outlet.process.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        await asyncio.sleep(d.after_s)
        state = await read_counters(http)
        await asyncio.to_thread(live.outlet.stop)
        await asyncio.sleep(DRAIN_S)
        counters = await read_counters(http)
        after = rss_mb(live.server)
        await watch.stop()
        preds = observer.predictions()
        judge.values(out, preds, http)
        judge.loss(out, preds, counters)
        judge.memory(out, before, after, lim.rss_growth_mb)
        judge.recovery(out, first_accepted_after(preds, recv_clock=resumed), resumed, lim.recovery_s,
                       "SIGCONT -> first accepted decision")
        lost = observer.events("stream_lost", hung)
        out.check("reported lost", bool(lost) and lost[0].recv_clock - hung <= lim.lost_after_s,
                  "stream_lost " + (f"{lost[0].recv_clock - hung:.2f} s after SIGSTOP" if lost else "never announced")
                  + f" (limit {lim.lost_after_s:g} s)")
        states = state.states if state else {}
        out.check("one stream, connected again", list(states.values()) == ["connected"], f"streams: {states}")
        if counters is not None:
            out.notes.append(f"counted: {counters.gaps} gaps, {counters.missing_samples} missing samples")


def shape_case(ctx: CaseContext, out: Outcome) -> None:
    """An 8-channel stream for the 16-channel model: refused with a reason in /streams, no decision."""
    with ExitStack() as stack:
        live = start_live(ctx, stack, FaultSpec(), n_channels=TINY_CHANNELS // 2)
        asyncio.run(_shape_body(ctx, out, live))


async def _shape_body(ctx: CaseContext, out: Outcome, live: Live) -> None:
    lim = ctx.limits
    async with watching(live.server.url, live.server.ws_url) as watch:
        http, observer = watch.http, watch.observer
        before = rss_mb(live.server)
        waited, state = await wait_state(http, "refused", timeout_s=10.0 + lim.answer_s, source_id=live.source_id)
        await asyncio.sleep(ctx.durations.settle_s)
        health = await http.json("/health")
        counters = await read_counters(http)
        await watch.stop()
        preds = observer.predictions()
        reason = next(iter(state.reasons.values()), "") if state else ""
        out.check("refused with a reason", waited is not None and bool(reason),
                  f"state {state.states if state else 'unreadable'}; reason: {reason or 'none'}")
        out.check("no decision", not preds, f"{len(preds)} decisions on the refused stream")
        out.check("server healthy", bool(health) and health.get("status") == "ok",
                  f"/health status {health.get('status') if health else 'unanswered'}")
        judge.values(out, preds, http)
        judge.memory(out, before, rss_mb(live.server), lim.rss_growth_mb)
        out.windows_lost, out.windows_counted = 0, counters.counted if counters else None
