"""The checks most cases share: loss only where the server counted it, no bad numbers, memory bounded,
recovery within its limit. Each adds a `Check` with the measured value to the outcome."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rohde.reliability.observe import Http, Seen, non_finite, seq_gaps
from rohde.reliability.outcome import Outcome
from rohde.reliability.rig import Counters

IN_FLIGHT_PER_STREAM = 2  # windows between the /streams and /metrics snapshots of a running stream


def loss(out: Outcome, predictions: Sequence[Seen], counters: Counters | None) -> None:
    """Lost: sequence gaps a reading client saw + windows cut but never run; both must be counted."""
    if counters is None:
        out.check("counters readable", False, "/streams or /metrics did not answer at the end")
        return
    gaps = seq_gaps(predictions)
    not_run = max(0, counters.emitted - counters.processed)
    out.windows_lost = gaps + not_run
    out.windows_counted = counters.counted
    slack = IN_FLIGHT_PER_STREAM * max(1, len(counters.states))
    out.check("loss is counted", gaps <= counters.ws_dropped and not_run <= counters.shed + counters.dropped + slack,
              f"{gaps} sequence gaps (WebSocket drops counted {counters.ws_dropped}); {not_run} windows cut but not "
              f"run (shed {counters.shed} + dropped {counters.dropped}, {slack} in flight allowed)")


def values(out: Outcome, predictions: Sequence[Seen], http: Http) -> None:
    bad = non_finite(predictions)
    out.bad_values = bad + http.five_xx
    out.check("no 5xx, no non-finite or null value", out.bad_values == 0,
              f"{bad} of {len(predictions)} messages with a non-finite or null number, {http.five_xx} 5xx answers")


def memory(out: Outcome, before: float, after: float, limit_mb: float) -> None:
    out.rss_before_mb, out.rss_after_mb = before, after
    growth = after - before
    out.check("memory bounded", math.isfinite(growth) and growth <= limit_mb,
              f"RSS {before:.1f} -> {after:.1f} MB ({growth:+.1f} MB; limit +{limit_mb:g} MB)")


def recovery(out: Outcome, first: Seen | None, since_clock: float, limit_s: float, what: str) -> None:
    out.recovery_s = None if first is None else round(first.recv_clock - since_clock, 3)
    out.check("recovers in time", out.recovery_s is not None and out.recovery_s <= limit_s,
              f"{what}: {'never' if out.recovery_s is None else f'{out.recovery_s:.2f} s'} (limit {limit_s:g} s)")


def delivery(out: Outcome, predictions: Sequence[Seen], *, n_streams: int, seconds: float, hop_s: float,
             share: float) -> None:
    expected = n_streams * seconds / hop_s
    out.check("decisions keep coming", len(predictions) >= share * expected,
              f"{len(predictions)} decisions received of about {expected:.0f} expected "
              f"({len(predictions) / expected:.0%}; at least {share:.0%})")
