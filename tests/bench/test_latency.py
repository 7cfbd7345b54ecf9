"""Capacity: the largest stream count that passed with every smaller count passing too."""

from __future__ import annotations

from rohde.bench.latency import capacity_of


def test_capacity_is_the_largest_count_below_the_first_failure() -> None:
    steps = [{"n_streams": n, "realtime_ok": ok} for n, ok in ((1, True), (8, True), (32, False), (16, True))]
    assert capacity_of(steps) == (16, 32)
    assert capacity_of([{"n_streams": 4, "realtime_ok": False}, {"n_streams": 8, "realtime_ok": True}]) == (0, 4)
    assert capacity_of([{"n_streams": 2, "realtime_ok": True}]) == (2, None)
