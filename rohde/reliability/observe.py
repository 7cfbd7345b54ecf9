"""What clients see: a WebSocket observer that records every message with its receipt time, an
HTTP client that counts 5xx answers, and the counting of gaps, bad numbers and recovery over the
recorded messages."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from rohde.core.errors import RohdeError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Seen:
    """One message as a client received it."""

    kind: str  # "prediction" or "status"
    recv_clock: float  # time.monotonic() at receipt (the LSL local clock)
    stream_id: str | None
    seq: int = -1
    lsl_time: float = math.nan
    rejected: bool = True
    reject_reason: str | None = None
    gesture: str | None = None
    window_gesture: str | None = None
    finite: bool = True  # every number of the message is present and finite
    model_name: str | None = None
    model_generation: int = 0  # the activation whose engine ran the window (>= 1; 0 when absent)
    labels: tuple[str, ...] = ()
    n_probabilities: int = 0
    event: str | None = None  # status messages
    vote_k: int = 0
    confidence_threshold: float = math.nan


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_message(raw: str | bytes, recv_clock: float) -> Seen:
    msg = json.loads(raw)  # json accepts NaN and Infinity tokens: they are counted, not fatal
    if msg.get("kind") != "prediction":
        return Seen(kind=str(msg.get("kind")), recv_clock=recv_clock, stream_id=msg.get("stream_id"),
                    event=msg.get("event"), model_name=msg.get("model_name"))
    probs = msg.get("probabilities") or []
    numbers = [msg.get("confidence"), msg.get("lsl_time"), msg.get("latency_ms"), *probs]
    return Seen(kind="prediction", recv_clock=recv_clock, stream_id=msg.get("stream_id"), seq=int(msg["seq"]),
                lsl_time=float(msg.get("lsl_time") or math.nan), rejected=bool(msg.get("rejected")),
                reject_reason=msg.get("reject_reason"), gesture=msg.get("gesture"),
                window_gesture=msg.get("window_gesture"), finite=all(_finite(v) for v in numbers) and bool(probs),
                model_name=msg.get("model_name"), model_generation=int(msg.get("model_generation") or 0),
                labels=tuple(msg.get("labels") or ()), n_probabilities=len(probs),
                vote_k=int(msg.get("vote_k") or 0), confidence_threshold=float(msg.get("confidence_threshold") or 0))


@dataclass
class Observer:
    """One WebSocket client that reads every message until `stop` is set (or the server closes)."""

    ws_url: str
    stream: str | None = None  # ?stream= filter; None receives every stream
    messages: list[Seen] = field(default_factory=list)
    close_code: int | None = None  # the code of the close frame the server sent
    close_clock: float | None = None
    closed_without_frame: bool = False
    error: str | None = None

    async def run(self, stop: asyncio.Event, connected: asyncio.Event | None = None) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        url = self.ws_url + "/ws" + (f"?stream={quote(self.stream)}" if self.stream else "")
        try:
            async with connect(url, max_size=None, ping_interval=None, open_timeout=20, close_timeout=2) as ws:
                if connected is not None:
                    connected.set()
                stopper = asyncio.create_task(stop.wait())
                while not stop.is_set():
                    getter = asyncio.create_task(ws.recv())
                    done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    if getter not in done:
                        getter.cancel()
                        break
                    try:
                        raw = getter.result()
                    except ConnectionClosed as exc:
                        self._closed(exc)
                        break
                    self.messages.append(parse_message(raw, time.monotonic()))
                stopper.cancel()
        except ConnectionClosed as exc:
            self._closed(exc)
        except Exception as exc:  # recorded and judged by the case, never fatal to the run
            self.error = f"{type(exc).__name__}: {exc}"
            logger.warning("WebSocket observer %s failed: %s", url, self.error)
        finally:
            if connected is not None:
                connected.set()

    def _closed(self, exc: Any) -> None:
        self.close_clock = time.monotonic()
        if exc.rcvd is None:
            self.closed_without_frame = True
        else:
            self.close_code = int(exc.rcvd.code)

    def predictions(self, stream_id: str | None = None) -> list[Seen]:
        return [m for m in self.messages if m.kind == "prediction" and (stream_id is None or m.stream_id == stream_id)]

    def events(self, event: str, start: float = -math.inf, end: float = math.inf) -> list[Seen]:
        """Status messages `event` received in [start, end] (monotonic clock)."""
        return [m for m in self.messages if m.kind == "status" and m.event == event and start <= m.recv_clock <= end]

    def describe_end(self) -> str:
        if self.error:
            return f"failed: {self.error}"
        if self.closed_without_frame:
            return "dropped without a close frame"
        return f"closed by the server with {self.close_code}" if self.close_code is not None else "open to the end"


async def start_observer(ws_url: str, stop: asyncio.Event, stream: str | None = None,
                         ) -> tuple[Observer, asyncio.Task[None]]:
    """An observer connected (or failed) before this returns, reading in its own task."""
    observer = Observer(ws_url, stream)
    connected = asyncio.Event()
    task = asyncio.create_task(observer.run(stop, connected))
    await asyncio.wait_for(connected.wait(), 30.0)
    return observer, task


def seq_gaps(predictions: Iterable[Seen]) -> int:
    """Decisions skipped in each stream's sequence numbers, in receipt order."""
    last: dict[str | None, int] = {}
    gaps = 0
    for m in predictions:
        prev = last.get(m.stream_id)
        if prev is not None and m.seq > prev + 1:
            gaps += m.seq - prev - 1
        last[m.stream_id] = max(m.seq, prev if prev is not None else -1)
    return gaps


def non_finite(predictions: Iterable[Seen]) -> int:
    return sum(1 for m in predictions if not m.finite)


def first_accepted_after(predictions: Sequence[Seen], *, lsl_time: float = -math.inf,
                         recv_clock: float = -math.inf) -> Seen | None:
    """The first accepted decision whose window ends at or after `lsl_time`, received after `recv_clock`."""
    for m in predictions:
        if not m.rejected and m.lsl_time >= lsl_time and m.recv_clock >= recv_clock:
            return m
    return None


def max_silence_s(predictions: Sequence[Seen], start: float, end: float) -> float:
    """The longest time between consecutive decisions received in [start, end] (edges included)."""
    times = [start, *(m.recv_clock for m in predictions if start <= m.recv_clock <= end), end]
    return max(b - a for a, b in zip(times, times[1:], strict=False)) if len(times) > 1 else math.inf


@dataclass
class Http:
    """An async HTTP client on the server that counts 5xx answers and transport errors."""

    base_url: str
    token: str | None = None
    statuses: list[int] = field(default_factory=list)
    five_xx: int = 0
    errors: int = 0
    _client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Http:
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=10.0,
                                         limits=httpx.Limits(max_connections=128, max_keepalive_connections=128))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        if self._client is None:
            raise RohdeError("Http.request was called outside `async with Http(...)`.")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = await self._client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            self.errors += 1
            logger.warning("%s %s failed: %s", method, path, exc)
            return None
        self.statuses.append(response.status_code)
        if response.status_code >= 500:
            self.five_xx += 1
        return response

    async def json(self, path: str) -> Any:
        response = await self.request("GET", path)
        if response is None or response.status_code != 200:
            return None
        return response.json()


@dataclass
class Watch:
    """A case's view of the server: an HTTP client and one WebSocket observer reading in its own task."""

    http: Http
    observer: Observer
    _stop: asyncio.Event
    _task: asyncio.Task[None]

    async def stop(self) -> None:
        """Stop the observer (again: nothing); what it saw stays readable."""
        self._stop.set()
        await self._task


@asynccontextmanager
async def watching(base_url: str, ws_url: str, *, token: str | None = None) -> AsyncIterator[Watch]:
    """The HTTP client and a connected observer for one case; both end with the block."""
    stop = asyncio.Event()
    async with Http(base_url, token=token) as http:
        observer, task = await start_observer(ws_url, stop)
        watch = Watch(http, observer, stop, task)
        try:
            yield watch
        finally:
            await watch.stop()
