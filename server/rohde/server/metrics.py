"""Server metrics in the Prometheus text exposition format (version 0.0.4), without a client library.

Counters and histograms are updated from pipeline threads and read by the `/metrics` route, so
every update holds one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum

import numpy as np

# Latency buckets in seconds: the interesting range is 0.1 ms to a hop (tens of ms).
LATENCY_BUCKETS_S: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class Histogram:
    """Cumulative-bucket histogram; also keeps recent raw values for median/p99 reports."""

    def __init__(self, buckets: Sequence[float], *, keep_last: int = 20000) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.n = 0
        self._recent = np.zeros(keep_last, dtype=np.float64)
        self._recent_n = 0

    def observe(self, value: float) -> None:
        for i, edge in enumerate(self.buckets):
            if value <= edge:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.n += 1
        self._recent[self._recent_n % len(self._recent)] = value
        self._recent_n += 1

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        n = min(self._recent_n, len(self._recent))
        if n == 0:
            return [float("nan") for _ in qs]
        return [float(np.quantile(self._recent[:n], q)) for q in qs]


class StreamCounter(StrEnum):
    """The counters kept per stream, in the order `/metrics` lists them."""

    WINDOWS_PROCESSED = "windows_processed"
    WINDOWS_REJECTED = "windows_rejected"
    GAPS = "gaps"
    MISSING_SAMPLES = "missing_samples"
    OVERFLOWS = "overflows"
    NONFINITE_SAMPLES = "nonfinite_samples"
    WINDOWS_SHED = "windows_shed"  # discarded, oldest first, because inference fell behind


# Prometheus name and help text of each per-stream counter.
_STREAM_COUNTER_TEXT: dict[StreamCounter, tuple[str, str]] = {
    StreamCounter.WINDOWS_PROCESSED: ("rohde_windows_processed_total", "Windows run through the model."),
    StreamCounter.WINDOWS_REJECTED: ("rohde_windows_rejected_total", "Decisions marked rejected."),
    StreamCounter.GAPS: ("rohde_stream_gaps_total", "Timestamp gaps detected in a stream."),
    StreamCounter.MISSING_SAMPLES: ("rohde_stream_missing_samples_total", "Samples estimated lost in gaps."),
    StreamCounter.OVERFLOWS: ("rohde_stream_overflows_total", "Gaps caused by the inlet buffer overflowing."),
    StreamCounter.NONFINITE_SAMPLES: ("rohde_stream_nonfinite_samples_total", "NaN or Inf samples received."),
    StreamCounter.WINDOWS_SHED: ("rohde_windows_shed_total", "Windows discarded unprocessed, oldest first, because "
                                 "inference fell behind (inference queue full)."),
}


class ServerMetrics:
    """All counters the server exposes; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per_stream: dict[StreamCounter, dict[str, int]] = {counter: {} for counter in StreamCounter}
        self.dropped_messages = 0
        self.windows_dropped = 0  # prepared for a model generation no longer loaded
        self.batches = 0
        self.inference_latency = Histogram(LATENCY_BUCKETS_S)  # ONNX Runtime run per batch
        self.processing_latency = Histogram(LATENCY_BUCKETS_S)  # last sample pulled -> decision ready
        self.model_swaps = 0
        self.inference_queue_depth = 0  # windows waiting for inference now (set by `JobQueue`)

    def add(self, counter: StreamCounter, stream_id: str, value: int = 1) -> None:
        with self._lock:
            table = self._per_stream[counter]
            table[stream_id] = table.get(stream_id, 0) + value

    def stream_counts(self, counter: StreamCounter) -> dict[str, int]:
        """A copy of `counter`'s value per stream id."""
        with self._lock:
            return dict(self._per_stream[counter])

    def count_dropped(self, n: int = 1) -> None:
        with self._lock:
            self.dropped_messages += n

    def count_windows_dropped(self, n: int) -> None:
        with self._lock:
            self.windows_dropped += n

    def observe_batch(self, inference_s: float, processing_s: Sequence[float]) -> None:
        with self._lock:
            self.batches += 1
            self.inference_latency.observe(inference_s)
            for value in processing_s:
                self.processing_latency.observe(value)

    def set_inference_queue_depth(self, depth: int) -> None:
        with self._lock:
            self.inference_queue_depth = depth

    def count_swap(self) -> None:
        with self._lock:
            self.model_swaps += 1

    def latency_summary_ms(self) -> dict[str, float]:
        with self._lock:
            median, p99 = self.processing_latency.quantiles((0.5, 0.99))
            return {"median_ms": median * 1000, "p99_ms": p99 * 1000, "n": self.processing_latency.n}

    def render(self, stream_states: Mapping[str, str], shared_backlog: Mapping[str, int] | None = None) -> str:
        """The whole exposition text; `stream_states` maps stream id -> state name, `shared_backlog` each thread
        the streams share (neighbours, alignment) -> tasks queued or running on it."""
        with self._lock:
            lines: list[str] = []
            for counter, table in self._per_stream.items():
                name, help_text = _STREAM_COUNTER_TEXT[counter]
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
                lines += [f'{name}{{stream="{_escape(s)}"}} {v}' for s, v in sorted(table.items())]
            lines += [
                "# HELP rohde_ws_dropped_messages_total Messages dropped for slow WebSocket clients.",
                "# TYPE rohde_ws_dropped_messages_total counter",
                f"rohde_ws_dropped_messages_total {self.dropped_messages}",
                "# HELP rohde_windows_dropped_total Windows whose model was unloaded before they ran.",
                "# TYPE rohde_windows_dropped_total counter",
                f"rohde_windows_dropped_total {self.windows_dropped}",
                "# HELP rohde_inference_batches_total ONNX Runtime batches run.",
                "# TYPE rohde_inference_batches_total counter",
                f"rohde_inference_batches_total {self.batches}",
                "# HELP rohde_model_swaps_total Successful model activations after start-up.",
                "# TYPE rohde_model_swaps_total counter",
                f"rohde_model_swaps_total {self.model_swaps}",
                "# HELP rohde_inference_queue_depth Windows waiting for inference (the oldest are shed when full).",
                "# TYPE rohde_inference_queue_depth gauge",
                f"rohde_inference_queue_depth {self.inference_queue_depth}",
            ]
            if shared_backlog:
                lines += ["# HELP rohde_shared_thread_backlog Tasks queued or running on a thread every stream shares.",
                          "# TYPE rohde_shared_thread_backlog gauge"]
                lines += [f'rohde_shared_thread_backlog{{thread="{_escape(t)}"}} {n}'
                          for t, n in sorted(shared_backlog.items())]
            lines += _histogram_lines(
                "rohde_inference_latency_seconds", "ONNX Runtime time per batch.", self.inference_latency
            )
            lines += _histogram_lines(
                "rohde_processing_latency_seconds",
                "Time from pulling a window's last sample to its decision.",
                self.processing_latency,
            )
        lines += [
            "# HELP rohde_stream_state Current state of each stream (1 for the state it is in).",
            "# TYPE rohde_stream_state gauge",
        ]
        lines += [
            f'rohde_stream_state{{stream="{_escape(s)}",state="{st}"}} 1' for s, st in sorted(stream_states.items())
        ]
        return "\n".join(lines) + "\n"


def _histogram_lines(name: str, help_text: str, hist: Histogram) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    cumulative = 0
    for edge, count in zip(hist.buckets, hist.counts, strict=False):
        cumulative += count
        lines.append(f'{name}_bucket{{le="{edge}"}} {cumulative}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {hist.n}')
    lines.append(f"{name}_sum {hist.total}")
    lines.append(f"{name}_count {hist.n}")
    return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
