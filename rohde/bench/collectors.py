"""WebSocket clients that record every decision with its receipt time, beside a sampler of the
server's memory and CPU."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from rohde.bench.machine import proc_cpu_s, proc_rss_mb

logger = logging.getLogger(__name__)


@dataclass
class Received:
    stream_id: str
    lsl_time: float
    recv_clock: float  # time.monotonic() (= LSL local clock) at receipt
    recv_wall: float
    server_time: float
    latency_ms: float  # the server's own processing latency (pulled -> decision ready)


async def collect_decisions(ws_url: str, stream_ids: Sequence[str], duration_s: float, pid: int,
                            sample_every_s: float = 5.0,
                            ) -> tuple[list[Received], list[tuple[float, float, float]], list[str]]:
    """One WebSocket client per stream for `duration_s`; also samples the server's (t, RSS MB, CPU s)."""
    from websockets.asyncio.client import connect

    records: list[Received] = []
    samples: list[tuple[float, float, float]] = []
    client_errors: list[str] = []
    end = time.monotonic() + duration_s

    async def client(stream_id: str) -> None:
        try:
            async with connect(f"{ws_url}/ws?stream={quote(stream_id)}", max_size=None, ping_interval=None,
                               open_timeout=30) as ws:
                while (remaining := end - time.monotonic()) > 0:
                    try:
                        raw = await asyncio.wait_for(ws.recv(), remaining)
                    except TimeoutError:
                        break
                    recv_clock, recv_wall = time.monotonic(), time.time()
                    msg = json.loads(raw)
                    if msg.get("kind") == "prediction":
                        records.append(Received(stream_id, msg["lsl_time"], recv_clock, recv_wall,
                                                msg["server_time"], msg["latency_ms"]))
        except Exception as exc:  # an overloaded server may refuse or drop a client: counted, not fatal
            logger.warning("WebSocket client of %s failed: %s", stream_id, exc)
            client_errors.append(f"{stream_id}: {type(exc).__name__}: {exc}")

    async def sampler() -> None:
        while (remaining := end - time.monotonic()) > 0:
            samples.append((time.monotonic(), proc_rss_mb(pid), proc_cpu_s(pid)))
            await asyncio.sleep(min(sample_every_s, remaining))
        samples.append((time.monotonic(), proc_rss_mb(pid), proc_cpu_s(pid)))

    await asyncio.gather(sampler(), *(client(s) for s in stream_ids))
    return records, samples, client_errors


async def collect_replicas(replicas: Sequence[tuple[str, Sequence[str], int]], duration_s: float,
                           sample_every_s: float = 5.0,
                           ) -> tuple[list[Received], list[tuple[float, float, float]], list[str]]:
    """`collect_decisions` for several servers at once, each `(ws_url, stream_ids, pid)`; the memory and CPU
    samples are the servers' sums (sample i of each server, taken together)."""
    parts = await asyncio.gather(*(collect_decisions(url, ids, duration_s, pid, sample_every_s)
                                   for url, ids, pid in replicas))
    records = [r for part_records, _, _ in parts for r in part_records]
    errors = [e for _, _, part_errors in parts for e in part_errors]
    n = min(len(samples) for _, samples, _ in parts)
    summed = [(parts[0][1][i][0], sum(p[1][i][1] for p in parts), sum(p[1][i][2] for p in parts)) for i in range(n)]
    return records, summed, errors
