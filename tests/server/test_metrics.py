"""The Prometheus exposition text of the server's counters and histograms."""

from __future__ import annotations

import threading

import pytest

from rohde.server.metrics import ServerMetrics, StreamCounter
from rohde.server.threads import SharedThread

from .conftest import wait_for

pytestmark = pytest.mark.timeout(60)


def test_metrics_text_format() -> None:
    metrics = ServerMetrics()
    metrics.add(StreamCounter.WINDOWS_PROCESSED, "s1", 3)
    metrics.add(StreamCounter.GAPS, "s1")
    metrics.observe_batch(0.0007, [0.003, 0.004])
    metrics.count_dropped(2)
    text = metrics.render({"s1": "connected"})
    assert 'rohde_windows_processed_total{stream="s1"} 3' in text
    assert 'rohde_stream_gaps_total{stream="s1"} 1' in text
    assert "rohde_ws_dropped_messages_total 2" in text
    assert 'rohde_inference_latency_seconds_bucket{le="0.001"} 1' in text
    assert "rohde_processing_latency_seconds_count 2" in text
    assert 'rohde_stream_state{stream="s1",state="connected"} 1' in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


def test_inference_queue_depth_is_a_gauge() -> None:
    metrics = ServerMetrics()
    assert "rohde_inference_queue_depth 0" in metrics.render({}).splitlines()
    metrics.set_inference_queue_depth(17)
    lines = metrics.render({}).splitlines()
    assert "# TYPE rohde_inference_queue_depth gauge" in lines and "rohde_inference_queue_depth 17" in lines


def test_every_per_stream_counter_is_listed_in_order() -> None:
    metrics = ServerMetrics()
    for counter in StreamCounter:
        metrics.add(counter, "s")
    assert metrics.stream_counts(StreamCounter.OVERFLOWS) == {"s": 1}
    counted = [line.split("{")[0] for line in metrics.render({}).splitlines() if line.endswith('{stream="s"} 1')]
    assert counted == [
        "rohde_windows_processed_total", "rohde_windows_rejected_total", "rohde_stream_gaps_total",
        "rohde_stream_missing_samples_total", "rohde_stream_overflows_total", "rohde_stream_nonfinite_samples_total",
        "rohde_windows_shed_total",
    ]


def test_a_shared_thread_counts_its_backlog_and_metrics_show_it() -> None:
    # One task holds the thread, two wait behind it: a backlog of 3 until they are done, then none.
    pool = SharedThread("test")
    release = threading.Event()
    try:
        futures = [pool.submit(release.wait, 10.0) for _ in range(3)]
        assert pool.backlog == 3
        text = ServerMetrics().render({}, {"neighbours": pool.backlog, "alignment": 0})
        assert "# TYPE rohde_shared_thread_backlog gauge" in text
        assert 'rohde_shared_thread_backlog{thread="neighbours"} 3' in text.splitlines()
        assert 'rohde_shared_thread_backlog{thread="alignment"} 0' in text.splitlines()
        release.set()
        for future in futures:
            future.result(timeout=10.0)
        wait_for(lambda: pool.backlog == 0, 10)  # a task leaves the count in its done callback, just after its result
        assert pool.submit(lambda: 1 / 0).exception(timeout=10.0) is not None
        wait_for(lambda: pool.backlog == 0, 10)  # a task that failed counts out too
    finally:
        release.set()
        pool.shutdown(wait=True)
