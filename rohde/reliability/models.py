"""Model faults under load: broken packages PUT as active (refused, streams never stop) and a hot swap
between two valid packages every second (no stream stops, no output of one model under the other's
name)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from contextlib import ExitStack
from pathlib import Path

from rohde.bench.server import ServerHandle, wait_connected
from rohde.reliability import judge
from rohde.reliability.fault_outlet import FaultSpec, start_fault_outlet
from rohde.reliability.observe import Seen, max_silence_s, watching
from rohde.reliability.outcome import Outcome
from rohde.reliability.rig import (
    LABELS,
    PACKAGE_A,
    PACKAGE_B,
    TINY_CHANNELS,
    TINY_FS_HZ,
    TOKEN,
    CaseBody,
    CaseContext,
    read_counters,
    rss_mb,
    serve,
    stream_name,
)
from rohde.reliability.streams import DRAIN_S
from rohde.server.processes import Child, stop_children, unique_id

BROKEN = ("corrupted", "truncated", "lying", "undecodable")


def break_package(valid: Path, target: Path, how: str) -> Path:
    """A copy of `valid` at `target`, broken `how`: ONNX bytes garbage (sha matching), ONNX cut in half
    (sha matching), sha not matching a valid ONNX, or metadata that is not UTF-8."""
    shutil.copytree(valid, target)
    onnx, meta_path = target / "model.onnx", target / "metadata.json"
    meta = json.loads(meta_path.read_text())
    if how == "corrupted":
        onnx.write_bytes(bytes(b ^ 0x5A for b in onnx.read_bytes()))
    elif how == "truncated":
        onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    elif how == "lying":
        meta["onnx_sha256"] = "0" * 64
    if how in ("corrupted", "truncated"):
        meta["onnx_sha256"] = hashlib.sha256(onnx.read_bytes()).hexdigest()
    meta["name"] = target.name
    text = json.dumps(meta).encode()
    if how == "undecodable":
        text = text.replace(b'"name": "', b'"name": "\xff\xfe', 1)
    meta_path.write_bytes(text)
    return target


def broken_case(how: str) -> CaseBody:
    def run(ctx: CaseContext, out: Outcome) -> None:
        models = ctx.models()
        bad = break_package(models / PACKAGE_A, models / f"broken-{how}", how)
        name, sid = stream_name(), unique_id("rel")
        with ExitStack() as stack:
            server = stack.enter_context(serve(ctx, model=models / PACKAGE_A, stream_name=name))
            outlet, _ = start_fault_outlet(name=name, source_id=sid, n_channels=TINY_CHANNELS, fs_hz=TINY_FS_HZ,
                                           workdir=ctx.workdir)
            stack.enter_context(outlet)
            wait_connected(server, [sid], timeout_s=30.0)
            asyncio.run(_broken_body(ctx, out, server, outlet, bad.name))

    return run


async def _broken_body(ctx: CaseContext, out: Outcome, server: ServerHandle, outlet: Child, bad: str) -> None:
    d, lim = ctx.durations, ctx.limits
    async with watching(server.url, server.ws_url, token=TOKEN) as watch:
        http, observer = watch.http, watch.observer
        await asyncio.sleep(d.settle_s)
        before = rss_mb(server)
        listed = await http.request("GET", "/models")
        start = time.monotonic()
        put = await http.request("PUT", "/models/active", json={"name": bad})
        answered = time.monotonic()
        await asyncio.sleep(d.settle_s)
        end = time.monotonic()
        active = await http.json("/models/active")
        await asyncio.to_thread(outlet.stop)
        await asyncio.sleep(DRAIN_S)
        counters = await read_counters(http)
        after = rss_mb(server)
        await watch.stop()
        preds = observer.predictions()
        code = put.status_code if put is not None else None
        out.check("refused with 4xx", code is not None and 400 <= code < 500,
                  f"PUT answered {code} in {answered - start:.2f} s: "
                  f"{(put.text[:120] if put is not None else 'no answer')!r}")
        out.check("listing answers", listed is not None and listed.status_code == 200,
                  f"GET /models answered {listed.status_code if listed is not None else 'nothing'}")
        out.check("previous model stays", bool(active) and active.get("folder") == PACKAGE_A,
                  f"active after: {active.get('folder') if active else 'none'}")
        silence = max_silence_s(preds, start, end)
        lost = observer.events("stream_lost", start, end)
        out.check("stream never stops", silence < 1.0 and not lost,
                  f"longest silence {silence:.2f} s around the PUT, {len(lost)} stream_lost events")
        judge.values(out, preds, http)
        judge.loss(out, preds, counters)
        judge.memory(out, before, after, lim.rss_growth_mb)


def hot_swap(ctx: CaseContext, out: Outcome) -> None:
    models = ctx.models()
    name = stream_name()
    sids = [unique_id("rel") for _ in range(2)]
    with ExitStack() as stack:
        server = stack.enter_context(serve(ctx, model=models / PACKAGE_A, stream_name=name))
        outlets: list[Child] = []
        for i, sid in enumerate(sids):
            child, _ = start_fault_outlet(name=name, source_id=sid, n_channels=TINY_CHANNELS, fs_hz=TINY_FS_HZ,
                                          workdir=ctx.workdir, seed=i, fault=FaultSpec())
            stack.enter_context(child)
            outlets.append(child)
        wait_connected(server, sids, timeout_s=30.0)
        asyncio.run(_swap_body(ctx, out, server, outlets))


async def _swap_body(ctx: CaseContext, out: Outcome, server: ServerHandle, outlets: list[Child]) -> None:
    d, lim = ctx.durations, ctx.limits
    async with watching(server.url, server.ws_url, token=TOKEN) as watch:
        http, observer = watch.http, watch.observer
        await asyncio.sleep(d.settle_s)
        before = rss_mb(server)
        start = time.monotonic()
        codes: list[int | None] = []
        k = 0
        while time.monotonic() < start + d.swap_s:
            target = PACKAGE_B if k % 2 == 0 else PACKAGE_A
            put = await http.request("PUT", "/models/active", json={"name": target})
            codes.append(put.status_code if put is not None else None)
            k += 1
            await asyncio.sleep(max(0.0, start + k - time.monotonic()))
        end = time.monotonic()
        await asyncio.sleep(1.0)
        health = await http.json("/health")
        await asyncio.to_thread(stop_children, outlets)
        await asyncio.sleep(DRAIN_S)
        counters = await read_counters(http)
        after = rss_mb(server)
        await watch.stop()
        preds = observer.predictions()
        during = [m for m in preds if start <= m.recv_clock <= end]
        out.check("every swap accepted", all(c == 200 for c in codes),
                  f"{sum(c == 200 for c in codes)} of {len(codes)} PUTs answered 200")
        mixed = [m for m in preds if LABELS.get(str(m.model_name)) != m.labels or m.n_probabilities != len(m.labels)]
        names = sorted({str(m.model_name) for m in during})
        out.check("no mixed outputs", not mixed,
                  f"{len(mixed)} of {len(preds)} decisions whose labels or probabilities are not their named "
                  f"model's; models seen during the swaps: {', '.join(names)}")
        _judge_generations(out, preds)
        silences = [max_silence_s([m for m in during if m.stream_id == s], start, end)
                    for s in {m.stream_id for m in preds}]
        worst = max(silences, default=float("inf"))
        lost = observer.events("stream_lost", start, end)
        out.check("no stream stops", len(silences) == len(outlets) and worst < 1.0 and not lost,
                  f"{len(silences)} streams deciding; longest silence {worst:.2f} s; {len(lost)} stream_lost events")
        errors = (health or {}).get("errors") or {}
        out.check("no worker error", bool(health) and not errors, f"/health errors: {errors or 'none'}")
        judge.values(out, preds, http)
        judge.loss(out, preds, counters)
        judge.memory(out, before, after, lim.rss_growth_mb)
        if counters is not None:
            out.notes.append(f"windows dropped for an unloaded model generation (counted): {counters.dropped}")


def _judge_generations(out: Outcome, preds: list[Seen]) -> None:
    """Each decision names the activation that ran its window: one generation must mean one model over
    the run, and a stream's generations never go back (a window of an old engine after a new one)."""
    names: dict[int, set[str]] = {}
    last: dict[str | None, int] = {}
    backwards = 0
    for m in preds:
        names.setdefault(m.model_generation, set()).add(str(m.model_name))
        backwards += m.model_generation < last.get(m.stream_id, 0)
        last[m.stream_id] = max(m.model_generation, last.get(m.stream_id, 0))
    shared = {g: sorted(n) for g, n in names.items() if len(n) > 1}
    out.check("one model per generation", bool(names) and 0 not in names and not shared,
              f"{len(names)} generations over {len(preds)} decisions; "
              f"{'missing in some decisions; ' if 0 in names else ''}"
              f"{len(shared)} named more than one model{f' {shared}' if shared else ''}")
    out.check("generations never go back", backwards == 0,
              f"{backwards} decisions whose generation is below an earlier one of the same stream")
