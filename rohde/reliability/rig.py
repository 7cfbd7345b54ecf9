"""The parts every case starts: tiny model packages in a models folder of the case's own, the real
server (the bench's `running_server`, i.e. `rohde serve` through the process harness), the server's
counters and its memory."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rohde.bench.machine import proc_rss_mb
from rohde.bench.server import ServerHandle, parse_metrics, running_server
from rohde.bench.tiny_package import build_tiny_package
from rohde.reliability.config import Durations, Limits
from rohde.reliability.observe import Http
from rohde.reliability.outcome import Outcome
from rohde.server.processes import unique_id

logger = logging.getLogger(__name__)

TOKEN = "reliability-admin-token"  # the admin token of every case's server (loopback only)
TINY_CHANNELS = 16
TINY_FS_HZ = 1000.0
PACKAGE_A = "tiny-a"  # 4 labels, 200 ms windows
PACKAGE_B = "tiny-b"  # 5 labels, 250 ms windows: an output of one can never pass for the other's
LABELS = {PACKAGE_A: ("rest", "g1", "g2", "g3"), PACKAGE_B: ("rest", "b1", "b2", "b3", "b4")}
WINDOW_MS = {PACKAGE_A: 200.0, PACKAGE_B: 250.0}


def amplitude_weights(n_channels: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights that make the tiny graph say "rest" confidently (p > 0.9) on the outlets' 20 uV noise
    and the second class confidently once the input is a few times larger: a real model whose
    confident answers on garbage input show whether the server rejects that input itself."""
    weights = np.zeros((n_channels, n_classes))
    weights[:, 1] = 4.0 / n_channels  # logit of class 1: 4 * mean log power
    bias = np.full(n_classes, -2.0)
    bias[0], bias[1] = 2.0, -4.0
    return weights, bias


def build_models(folder: Path) -> Path:
    """`folder` with the two valid tiny packages; returns it."""
    for name in (PACKAGE_A, PACKAGE_B):
        weights, bias = amplitude_weights(TINY_CHANNELS, len(LABELS[name]))
        build_tiny_package(folder / name, labels=LABELS[name], fs_hz=TINY_FS_HZ, weights=weights, bias=bias,
                           window_ms=WINDOW_MS[name], name=name,
                           training_data={"source": "rohde reliability: amplitude-sensitive fixed weights"})
    return folder


@dataclass(frozen=True)
class CaseContext:
    """What a case gets: its own folder, the run's durations and limits."""

    workdir: Path
    durations: Durations
    limits: Limits

    def models(self) -> Path:
        return build_models(self.workdir / "models")


CaseBody = Callable[[CaseContext, Outcome], None]  # runs one case, filling its outcome


@contextmanager
def serve(ctx: CaseContext, *, model: Path, stream_name: str, max_streams: int = 4,
          extra: dict[str, str] | None = None) -> Iterator[ServerHandle]:
    """The real server for streams named `stream_name`, with the admin token and no marker outlet."""
    overrides = {"ROHDE_ADMIN_TOKEN": TOKEN, "ROHDE_MARKER_OUTLET": "false", **(extra or {})}
    with running_server(model=model, stream_name=stream_name, max_streams=max_streams, workdir=ctx.workdir,
                        overrides=overrides) as server:
        yield server


def stream_name() -> str:
    return unique_id("RoHDE-Rel")


@dataclass(frozen=True)
class Counters:
    """The server's own count of what it did, summed over streams (from /streams and /metrics)."""

    emitted: int  # windows cut (/streams windows_emitted)
    processed: int  # windows run through the model
    rejected: int
    shed: int  # windows discarded because inference fell behind
    dropped: int  # windows prepared for a model no longer loaded
    ws_dropped: int  # messages dropped for slow WebSocket clients
    missing_samples: int
    gaps: int
    nonfinite_samples: int
    states: dict[str, str]  # stream id -> state
    reasons: dict[str, str]  # stream id -> reason
    source_ids: dict[str, str | None]  # stream id -> source_id

    @property
    def counted(self) -> int:
        return self.shed + self.dropped + self.ws_dropped


def _metric_sum(metrics: dict[str, float], name: str) -> int:
    return int(sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{")))


async def read_counters(http: Http) -> Counters | None:
    streams = await http.json("/streams")
    response = await http.request("GET", "/metrics")
    if streams is None or response is None or response.status_code != 200:
        return None
    m = parse_metrics(response.text)
    rows = streams.get("streams", [])
    return Counters(
        emitted=sum(int(s.get("windows_emitted") or 0) for s in rows),
        processed=_metric_sum(m, "rohde_windows_processed_total"),
        rejected=_metric_sum(m, "rohde_windows_rejected_total"),
        shed=_metric_sum(m, "rohde_windows_shed_total"), dropped=_metric_sum(m, "rohde_windows_dropped_total"),
        ws_dropped=_metric_sum(m, "rohde_ws_dropped_messages_total"),
        missing_samples=_metric_sum(m, "rohde_stream_missing_samples_total"),
        gaps=_metric_sum(m, "rohde_stream_gaps_total"),
        nonfinite_samples=_metric_sum(m, "rohde_stream_nonfinite_samples_total"),
        states={s["stream_id"]: s["state"] for s in rows}, reasons={s["stream_id"]: s.get("reason", "") for s in rows},
        source_ids={s["stream_id"]: s.get("source_id") for s in rows},
    )


def rss_mb(server: ServerHandle) -> float:
    try:
        return round(proc_rss_mb(server.child.pid), 1)
    except OSError:  # the process has gone
        return math.nan


async def wait_state(http: Http, predicate: str, *, timeout_s: float, source_id: str | None = None,
                     ) -> tuple[float | None, Counters | None]:
    """Seconds until some stream (with `source_id`, when given) is in state `predicate`; None on timeout."""
    import asyncio

    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout_s:
        last = await read_counters(http)
        if last is not None and any(st == predicate and (source_id is None or last.source_ids.get(sid) == source_id)
                                    for sid, st in last.states.items()):
            return time.monotonic() - start, last
        await asyncio.sleep(0.1)
    return None, last
