"""An HTTP request flood that costs the client little: raw HTTP/1.1 GETs on a few keep-alive
connections in one asyncio loop, paced to the asked rate and bounded in count and time. The client
shares the machine's cores with the server, so an httpx request object per call would measure the
client's own overhead, not the server."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024  # an answer's status line and headers
READ_TIMEOUT_S = 10.0  # one answer, or it counts as a transport error


@dataclass
class FloodResult:
    """What the flood did: requests sent and answered, their statuses and latencies."""

    sent: int = 0
    answered: int = 0
    five_xx: int = 0
    errors: int = 0  # transport errors: refused, reset, timed out, unreadable answer
    statuses: dict[int, int] = field(default_factory=dict)  # status code -> count
    latencies_s: list[float] = field(default_factory=list)
    seconds: float = 0.0  # first request due -> last answer

    @property
    def rate(self) -> float:
        """Requests answered per second."""
        return self.answered / self.seconds if self.seconds > 0 else 0.0


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """One HTTP/1.1 answer: (status code, whether the server keeps the connection open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"answer header of {len(head)} bytes")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip().lower() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readline()).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readline()
    return status, headers.get("connection") != "close"


async def flood(base_url: str, paths: Sequence[str], *, rate: float, seconds: float, connections: int,
                ) -> FloodResult:
    """GET `paths` in turn at `rate` per second for `seconds` on `connections` keep-alive connections.
    Stops asking at 2 x `seconds` even when the client falls behind (the shortfall shows in `rate`)."""
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    requests = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\n\r\n".encode() for p in paths]
    n_total = int(rate * seconds)
    tickets = itertools.count()
    result = FloodResult()
    start = time.monotonic()
    give_up = start + 2 * seconds

    async def worker() -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while (i := next(tickets)) < n_total and time.monotonic() < give_up:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                result.sent += 1
                sent_at = time.perf_counter()
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(asyncio.open_connection(host, port), READ_TIMEOUT_S)
                    conn[1].write(requests[i % len(requests)])
                    status, keep = await asyncio.wait_for(_read_answer(conn[0]), READ_TIMEOUT_S)
                except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    result.errors += 1  # counted and judged; a fresh connection for the next request
                    if conn is not None:
                        conn[1].close()
                    conn = None
                    continue
                result.latencies_s.append(time.perf_counter() - sent_at)
                result.answered += 1
                result.statuses[status] = result.statuses.get(status, 0) + 1
                result.five_xx += status >= 500
                if not keep:
                    conn[1].close()
                    conn = None
        finally:
            if conn is not None:
                conn[1].close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    result.seconds = time.monotonic() - start
    return result
