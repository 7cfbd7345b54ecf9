"""Client faults while one stream plays: WebSocket churn, clients that never read, malformed, binary
and oversized frames and an overlong upgrade request, and an HTTP request flood. A steady client
reads every message throughout; it must lose nothing the server does not count."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable, Coroutine
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from rohde.bench.server import ServerHandle, wait_connected
from rohde.reliability import judge
from rohde.reliability.fault_outlet import FaultSpec
from rohde.reliability.http_flood import flood
from rohde.reliability.observe import Watch, max_silence_s, watching
from rohde.reliability.outcome import Outcome
from rohde.reliability.rig import CaseContext, read_counters, rss_mb
from rohde.reliability.streams import DRAIN_S, HOP_S, Live, start_live

MAX_CONNECTS_PER_CLIENT = 200  # bounds the churn loop besides its duration
CHURN_SETTLE_S = 3.0  # after the warm-up churn, before RSS is read
HTTP_CONNECTIONS = 32  # keep-alive connections of the HTTP flood
NEVER_READ_BUFFER = 4096  # bytes: the kernel's receive buffer of a client that never reads


Body = Callable[[CaseContext, Outcome, Live], Coroutine[Any, Any, None]]


def _with_stream(ctx: CaseContext, out: Outcome, body: Body) -> None:
    with ExitStack() as stack:
        live = start_live(ctx, stack, FaultSpec())
        wait_connected(live.server, [live.source_id], timeout_s=30.0)
        asyncio.run(body(ctx, out, live))


async def _finish(ctx: CaseContext, out: Outcome, live: Live, watch: Watch, before: float, start: float, end: float, *,
                  after: float | None = None, rss_limit_mb: float | None = None) -> None:
    """Common end: stop the outlet, drain, read counters and memory (unless `after` was read already),
    judge the steady client."""
    http, steady = watch.http, watch.observer
    health = await http.json("/health")
    await asyncio.to_thread(live.outlet.stop)
    await asyncio.sleep(DRAIN_S)
    counters = await read_counters(http)
    after = rss_mb(live.server) if after is None else after
    await watch.stop()
    preds = steady.predictions()
    during = [m for m in preds if start <= m.recv_clock <= end]
    judge.values(out, preds, http)
    judge.loss(out, preds, counters)
    judge.memory(out, before, after, ctx.limits.rss_growth_mb if rss_limit_mb is None else rss_limit_mb)
    judge.delivery(out, during, n_streams=1, seconds=end - start, hop_s=HOP_S, share=ctx.limits.min_delivery)
    out.check("server healthy", bool(health) and health.get("status") == "ok",
              f"/health status {health.get('status') if health else 'unanswered'}")
    out.notes.append(f"steady client: longest silence {max_silence_s(during, start, end):.2f} s, "
                     f"{steady.describe_end()}")
    if counters is not None:
        out.notes.append(f"WebSocket messages dropped for slow clients (counted): {counters.ws_dropped}")


def churn(ctx: CaseContext, out: Outcome) -> None:
    _with_stream(ctx, out, _churn)


async def _churn_clients(url: str, n_clients: int, seconds: float, seed: int) -> tuple[int, int]:
    """`n_clients` concurrent WebSocket clients connecting, reading 0.1-1 s and leaving, for `seconds`:
    (connections made, connections failed)."""
    from websockets.asyncio.client import connect

    connects, failures = 0, 0
    end = time.monotonic() + seconds
    rng = random.Random(seed)

    async def client() -> None:
        nonlocal connects, failures
        for _ in range(MAX_CONNECTS_PER_CLIENT):
            if time.monotonic() >= end:
                return
            try:
                async with connect(url + "/ws", open_timeout=10, ping_interval=None, close_timeout=2) as ws:
                    connects += 1
                    stay = time.monotonic() + rng.uniform(0.1, 1.0)
                    while time.monotonic() < min(stay, end):
                        await asyncio.wait_for(ws.recv(), 2.0)
            except Exception:  # a refused or dropped client is counted and judged
                failures += 1
                await asyncio.sleep(0.1)

    await asyncio.gather(*(client() for _ in range(n_clients)))
    return connects, failures


async def _churn(ctx: CaseContext, out: Outcome, live: Live) -> None:
    d = ctx.durations
    async with watching(live.server.url, live.server.ws_url) as watch:
        # The first churn raises RSS once (allocator arenas, per-connection buffers) and later ones add
        # nothing: a plateau, not a leak. Growth is measured from after a warm-up churn of the same size.
        cold = rss_mb(live.server)
        warm_connects, warm_failures = await _churn_clients(live.server.ws_url, d.churn_clients,
                                                            d.churn_warmup_s, seed=1)
        await asyncio.sleep(CHURN_SETTLE_S)
        before = rss_mb(live.server)
        start = time.monotonic()
        connects, failures = await _churn_clients(live.server.ws_url, d.churn_clients, d.churn_s, seed=0)
        end = time.monotonic()
        await asyncio.sleep(1.0)  # the server lets go of the last clients
        after = rss_mb(live.server)
        out.notes.append(f"warm-up churn {d.churn_warmup_s:g} s ({warm_connects} connections, {warm_failures} "
                         f"failed): RSS {cold:.1f} -> {before:.1f} MB, the one-off plateau not judged")
        out.check("every client served", failures == 0,
                  f"{connects} connections by {d.churn_clients} concurrent clients in {end - start:.0f} s, "
                  f"{failures} failed")
        await _finish(ctx, out, live, watch, before, start, end,
                      after=after, rss_limit_mb=ctx.limits.churn_rss_growth_mb)


def never_read(ctx: CaseContext, out: Outcome) -> None:
    _with_stream(ctx, out, _never_read)


async def _upgrade(server: ServerHandle, path: str, *, receive_buffer: int | None = None,
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket upgrade on a TCP socket; the caller decides whether it ever reads again. A small
    `receive_buffer` (bytes) makes a client that never reads push back on the server within seconds."""
    host = urlsplit(server.url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host.hostname or "127.0.0.1", host.port or 80))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    await writer.drain()
    return reader, writer


async def _never_read(ctx: CaseContext, out: Outcome, live: Live) -> None:
    d = ctx.durations
    async with watching(live.server.url, live.server.ws_url) as watch:
        before = rss_mb(live.server)
        start = time.monotonic()
        sockets = []
        for _ in range(d.never_read_clients):
            reader, writer = await _upgrade(live.server, "/ws", receive_buffer=NEVER_READ_BUFFER)
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)  # the 101 answer, then never again
            sockets.append(writer)
        await asyncio.sleep(d.never_read_s)
        end = time.monotonic()
        out.notes.append(f"{len(sockets)} clients never read for {end - start:.0f} s (receive buffers of "
                         f"{NEVER_READ_BUFFER} bytes); a WebSocket drop count of 0 means the kernel's buffers still "
                         "held their backlog, so the per-client drop path was not reached in this time")
        for writer in sockets:
            writer.close()
        await _finish(ctx, out, live, watch, before, start, end)


def bad_frames(ctx: CaseContext, out: Outcome) -> None:
    _with_stream(ctx, out, _bad_frames)


async def _probe(url: str, payload: str | bytes, limit_s: float) -> str:
    """Send one frame, then read for `limit_s`: 'kept open', 'closed <code>' or 'dropped without close'."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    try:
        async with connect(url + "/ws", open_timeout=10, ping_interval=None, max_size=None, close_timeout=2) as ws:
            await ws.send(payload)
            deadline = time.monotonic() + limit_s
            got = 0
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
                    got += 1
                except TimeoutError:
                    break
            return f"kept open ({got} messages after)" if got else "silent"
    except ConnectionClosed as exc:
        return "dropped without close" if exc.rcvd is None else f"closed {exc.rcvd.code}"
    except Exception as exc:  # refused at the handshake: recorded as an answer
        return f"refused ({type(exc).__name__})"


async def _bad_frames(ctx: CaseContext, out: Outcome, live: Live) -> None:
    lim = ctx.limits
    async with watching(live.server.url, live.server.ws_url) as watch:
        before = rss_mb(live.server)
        start = time.monotonic()
        probes: dict[str, str | bytes] = {"malformed text": "{not json", "binary": b"\x00\x01\x02\xff",
                  "oversized (4 MiB)": "x" * (4 << 20)}
        for label, payload in probes.items():
            answer = await _probe(live.server.ws_url, payload, min(lim.answer_s, 3.0))
            out.check(f"{label} frame handled", answer.startswith(("kept open", "closed")),
                      f"{label} frame: {answer} (a close frame or service expected)")
        # An upgrade whose request line is over 8 KB must be answered, not left hanging.
        reader, writer = await _upgrade(live.server, "/ws?stream=" + "a" * 9000)
        asked = time.monotonic()
        try:
            line = await asyncio.wait_for(reader.readline(), lim.answer_s)
            answer = line.decode(errors="replace").strip() or "connection closed without an answer"
        except TimeoutError:
            answer = f"no answer within {lim.answer_s:g} s"
        writer.close()
        out.check("overlong upgrade answered", answer.startswith("HTTP/"),
                  f"9 KB request line: {answer!r} after {time.monotonic() - asked:.2f} s")
        await asyncio.sleep(ctx.durations.settle_s)  # the stream goes on after the probes
        end = time.monotonic()
        await _finish(ctx, out, live, watch, before, start, end)


def http_load(ctx: CaseContext, out: Outcome) -> None:
    _with_stream(ctx, out, _http_load)


async def _http_load(ctx: CaseContext, out: Outcome, live: Live) -> None:
    d = ctx.durations
    async with watching(live.server.url, live.server.ws_url) as watch:
        http = watch.http
        before = rss_mb(live.server)
        start = time.monotonic()
        load = await flood(live.server.url, ("/health", "/streams"), rate=d.http_rate, seconds=d.http_s,
                           connections=HTTP_CONNECTIONS)
        end = time.monotonic()
        p99 = float(np.percentile(load.latencies_s, 99)) * 1000 if load.latencies_s else float("nan")
        reached = load.rate >= 0.95 * d.http_rate
        out.notes.append(f"{load.answered} requests answered at {load.rate:.0f}/s achieved of {d.http_rate:g}/s "
                         f"asked on {HTTP_CONNECTIONS} keep-alive connections, p99 {p99:.1f} ms"
                         + ("" if reached else "; the ask was not reached: the client shares the machine's cores "
                            "with the streaming server"))
        out.check("every request answered", load.errors == 0 and load.five_xx == 0 and load.answered == load.sent,
                  f"{load.five_xx} 5xx, {load.errors} transport errors of {load.sent} sent; "
                  f"{load.rate:.0f}/s achieved of {d.http_rate:g}/s asked")
        http.five_xx += load.five_xx
        await _finish(ctx, out, live, watch, before, start, end)
