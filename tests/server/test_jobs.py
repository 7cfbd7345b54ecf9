"""The bounded inference queue: when it is full, the oldest windows are shed and counted."""

from __future__ import annotations

import numpy as np
import pytest

from rohde.server.jobs import JobQueue, WindowJob
from rohde.server.metrics import ServerMetrics, StreamCounter

pytestmark = pytest.mark.timeout(60)


def _job(stream_id: str, end: int) -> WindowJob:
    return WindowJob(stream_id=stream_id, generation=0, window=np.zeros((2, 4), np.float32), end_index=end,
                     lsl_time=0.0, pulled_at=0.0, bad_channels=(), reject_reason=None, flags=())


def test_full_inference_queue_sheds_the_oldest_windows_and_counts_them_per_stream() -> None:
    metrics = ServerMetrics()
    jobs = JobQueue(3, metrics)
    for end in range(5):
        jobs.offer(_job("a" if end < 2 else "b", end))
    kept = [jobs.get_nowait().end_index for _ in range(jobs.qsize())]
    assert kept == [2, 3, 4]  # the newest windows stay, in order
    assert metrics.stream_counts(StreamCounter.WINDOWS_SHED) == {"a": 2}
    assert 'rohde_windows_shed_total{stream="a"} 2' in metrics.render({})


def test_queue_depth_gauge_follows_every_offer_take_and_shed() -> None:
    metrics = ServerMetrics()
    jobs = JobQueue(3, metrics)
    depths = []
    for end in range(5):  # the last two shed the oldest: the depth stays at the capacity
        jobs.offer(_job("a", end))
        depths.append(metrics.inference_queue_depth)
    assert depths == [1, 2, 3, 3, 3]
    jobs.get_nowait()
    assert metrics.inference_queue_depth == 2
    jobs.get(timeout=1.0)
    jobs.get_nowait()
    assert metrics.inference_queue_depth == 0
    assert "rohde_inference_queue_depth 0" in metrics.render({}).splitlines()


def test_queue_needs_room_for_one_window() -> None:
    with pytest.raises(ValueError, match="maxsize=0"):
        JobQueue(0, ServerMetrics())
