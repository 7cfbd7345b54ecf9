"""What one `rohde reliability` run does: the groups and cases chosen, how long each part lasts, and
the limits each verdict is measured against."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from rohde.bench.config import REPO_ROOT
from rohde.core.errors import ConfigError

GROUPS = ("clients", "models", "streams", "process", "soak")
DEFAULT_OUT = REPO_ROOT / "docs" / "reliability.md"


@dataclass(frozen=True)
class Limits:
    """The thresholds the verdicts use; each is printed beside the case it judges."""

    recovery_s: float = 3.0  # fault end -> first accepted decision (or connected again)
    rss_growth_mb: float = 50.0  # server RSS after minus before, in a short case
    churn_rss_growth_mb: float = 10.0  # ws_churn: RSS after the measured churn minus after a warm-up churn
    soak_rss_growth_mb: float = 20.0  # soak: mean RSS of the last segment minus the first
    queue_growth: float = 1.0  # soak: mean inference-queue depth (windows) of the last segment minus the first
    exit_s: float = 1.0  # SIGTERM -> the server process has exited
    restart_s: float = 20.0  # a restarted server deciding again (process start included)
    answer_s: float = 5.0  # a refused frame or request is answered (close frame, status) within
    detect_s: float = 0.1  # a window holding at most this much of a signal fault may still be accepted
    lost_after_s: float = 3.0  # a stalled or hung stream is reported lost within
    min_delivery: float = 0.9  # share of the expected decisions a reading client must get under load


@dataclass(frozen=True)
class Durations:
    """Seconds (or counts) each part of a case lasts; every load loop is bounded by these."""

    settle_s: float = 3.0  # streaming before the fault
    fault_s: float = 2.0  # length of a signal fault (NaN, Inf, huge, zero, saturated)
    after_s: float = 6.0  # observed after the fault ends
    gap_s: float = 0.5  # samples skipped by the gap case
    stall_s: float = 3.0  # silence of the stall and hang cases, and the down time of a killed outlet
    drift_s: float = 20.0  # streaming with a drifting clock or jitter
    churn_s: float = 60.0  # WebSocket churn
    churn_clients: int = 200  # clients connected at once during the churn
    churn_warmup_s: float = 20.0  # the same churn first, so allocator warm-up is not read as growth
    never_read_s: float = 20.0  # clients that never read
    never_read_clients: int = 20
    http_s: float = 10.0  # HTTP load
    http_rate: float = 1000.0  # requests per second asked for
    swap_s: float = 20.0  # hot swap, one PUT a second
    soak_minutes: float = 30.0  # the soak at 8 streams of the shipped model's shape
    soak_streams: int = 8
    rss_every_s: float = 5.0  # RSS sampling period of the soak


QUICK = Durations(settle_s=2.0, fault_s=1.0, after_s=4.0, stall_s=2.5, drift_s=5.0, churn_s=5.0,
                  churn_clients=30, churn_warmup_s=2.0, never_read_s=4.0, never_read_clients=5, http_s=2.0,
                  http_rate=200.0,
                  swap_s=4.0, soak_minutes=0.5, soak_streams=2, rss_every_s=2.0)


@dataclass(frozen=True)
class ReliabilityConfig:
    out: Path = DEFAULT_OUT  # the Markdown report
    only: tuple[str, ...] = ()  # GROUP or GROUP:CASE names; empty = every case
    durations: Durations = field(default_factory=Durations)
    limits: Limits = field(default_factory=Limits)
    command: str = ""  # the command line, written into the report


def parse_limits(items: list[str], base: Limits | None = None) -> Limits:
    """`NAME=VALUE` overrides of `Limits` (e.g. `recovery_s=0`), refusing unknown names."""
    base = base or Limits()
    names = {f.name for f in fields(Limits)}
    values: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in names:
            raise ConfigError(f"--limit expects NAME=VALUE with NAME one of {sorted(names)}, got {item!r}.")
        try:
            values[name] = float(text)
        except ValueError as exc:
            raise ConfigError(f"--limit {name} needs a number, got {text!r}.") from exc
    return replace(base, **values)
