"""Windows ready for the model, and the bounded queue that carries them to the inference loop."""

from __future__ import annotations

import queue
from dataclasses import dataclass

import numpy as np

from rohde.server.metrics import ServerMetrics, StreamCounter


@dataclass(frozen=True)
class WindowJob:
    """One window ready for the model."""

    stream_id: str
    generation: int  # the model generation it was prepared for; run with exactly that engine
    window: np.ndarray  # (n_channels, window_samples) float32, filtered and normalised
    end_index: int  # stream sample index (exclusive) at which the window ends
    lsl_time: float  # corrected LSL timestamp of the window's last sample
    pulled_at: float  # perf_counter() when the chunk holding its last sample was pulled
    bad_channels: tuple[int, ...]
    reject_reason: str | None  # nonfinite_input / bad_channels, or None
    flags: tuple[str, ...]


class JobQueue(queue.Queue[WindowJob]):
    """The bounded inference queue. When inference falls behind (more streams than the machine can
    serve), the oldest window is shed: a late decision is worthless for control, and the memory of an
    unbounded backlog grows without limit. Each shed window is counted for its stream."""

    def __init__(self, maxsize: int, metrics: ServerMetrics) -> None:
        if maxsize < 1:
            raise ValueError(f"The inference queue needs room for at least one window, got maxsize={maxsize}.")
        super().__init__(maxsize)
        self._metrics = metrics

    # Queue calls `_put` and `_get` with its mutex held, so the depth reported is the one each change left.
    def _put(self, item: WindowJob) -> None:
        super()._put(item)
        self._metrics.set_inference_queue_depth(self._qsize())

    def _get(self) -> WindowJob:
        item = super()._get()
        self._metrics.set_inference_queue_depth(self._qsize())
        return item

    def offer(self, job: WindowJob) -> None:
        """Queue `job`, shedding the oldest queued windows while the queue is full."""
        while True:
            try:
                self.put_nowait(job)
                return
            except queue.Full:
                try:
                    shed = self.get_nowait()
                except queue.Empty:
                    continue  # the inference loop took one meanwhile: room again
                self._metrics.add(StreamCounter.WINDOWS_SHED, shed.stream_id)
