"""The inference loop: batches ready windows of every stream, runs the model, smooths, publishes.

One thread takes every `WindowJob` that is ready (from all streams), groups them by the model
generation they were prepared for, runs each group as one ONNX Runtime batch with that
generation's engine, applies each stream's `DecisionSmoother`, and hands the batch's
`PredictionMessage`s to the publishers (the WebSocket hub takes them all at once, with one wake-up
of the event loop; the LSL marker outlet one by one). A message carries finite numbers only: a
window whose model output is not finite is rejected (`nonfinite_output`) and published with zero
probabilities, and the message models refuse NaN and Inf outright.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Sequence

import numpy as np

from rohde.server.decisions import DecisionSmoother
from rohde.server.inference import ModelManager
from rohde.server.jobs import WindowJob
from rohde.server.messages import PredictionMessage
from rohde.server.metrics import ServerMetrics, StreamCounter
from rohde.server.threads import OwnedThread

logger = logging.getLogger(__name__)

Publisher = Callable[[PredictionMessage], None]
BatchPublisher = Callable[[Sequence[PredictionMessage]], None]  # takes all messages of one batch at once


class InferenceLoop:
    """Owns the inference thread; `start` and `stop` (idempotent, joined with a timeout)."""

    def __init__(self, *, jobs: queue.Queue[WindowJob], models: ModelManager, metrics: ServerMetrics,
                 publishers: Sequence[Publisher], vote_k: int, confidence_threshold: float, max_batch: int,
                 batch_publishers: Sequence[BatchPublisher] = ()) -> None:
        self._jobs = jobs
        self._models = models
        self._metrics = metrics
        self._publishers = list(publishers)
        self._batch_publishers = list(batch_publishers)
        self.vote_k = vote_k
        self.confidence_threshold = confidence_threshold
        self.max_batch = max_batch
        self._smoothers: dict[str, DecisionSmoother] = {}
        self._seq: dict[str, int] = {}
        self._thread = OwnedThread(self._run, name="rohde-inference")
        self._stop = self._thread.stop_event
        self.error: str | None = None
        self.windows_dropped_no_model = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        self._thread.stop(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.alive

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._jobs.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            try:
                self.process(batch)
            except Exception as exc:  # keep serving; surfaced in /health
                logger.exception("Inference on a batch of %d windows failed.", len(batch))
                self.error = f"{type(exc).__name__}: {exc}"

    def process(self, jobs: Sequence[WindowJob]) -> list[PredictionMessage]:
        """Run `jobs` (grouped by generation) and publish one message per job, in order per stream."""
        messages: list[PredictionMessage] = []
        for generation in sorted({j.generation for j in jobs}):
            group = [j for j in jobs if j.generation == generation]
            engine = self._models.engine_for(generation)
            if engine is None:
                self.windows_dropped_no_model += len(group)
                self._metrics.count_windows_dropped(len(group))
                logger.warning("Dropped %d windows prepared for unloaded model generation %d.", len(group), generation)
                continue
            # (B, C, W); a lone window goes as a view, with no copy.
            batch = group[0].window[None] if len(group) == 1 else np.stack([j.window for j in group])
            started = time.perf_counter()
            probabilities = engine.run(batch)  # (B, n_classes)
            inference_s = time.perf_counter() - started
            meta = engine.package.metadata
            done: list[float] = []
            for job, probs in zip(group, probabilities, strict=True):
                smoother = self._smoothers.get(job.stream_id)
                if smoother is None:
                    smoother = DecisionSmoother(k=self.vote_k, confidence_threshold=self.confidence_threshold)
                    self._smoothers[job.stream_id] = smoother
                decision = smoother.update(probs, input_reject_reason=job.reject_reason)
                seq = self._seq.get(job.stream_id, 0)
                self._seq[job.stream_id] = seq + 1
                latency_s = time.perf_counter() - job.pulled_at
                done.append(latency_s)
                messages.append(PredictionMessage(
                    stream_id=job.stream_id, seq=seq, lsl_time=job.lsl_time, server_time=time.time(),
                    gesture=meta.labels[decision.gesture_index], gesture_index=decision.gesture_index,
                    confidence=decision.confidence, window_gesture=meta.labels[decision.window_index],
                    probabilities=list(decision.probabilities), labels=list(meta.labels),
                    rejected=decision.rejected, reject_reason=decision.reject_reason, vote_k=self.vote_k,
                    confidence_threshold=self.confidence_threshold, latency_ms=latency_s * 1000.0,
                    model_name=meta.name, model_version=meta.version, model_generation=generation,
                    bad_channels=list(job.bad_channels),
                    condition_flags=list(job.flags),
                ))
                self._metrics.add(StreamCounter.WINDOWS_PROCESSED, job.stream_id)
                if decision.rejected:
                    self._metrics.add(StreamCounter.WINDOWS_REJECTED, job.stream_id)
            self._metrics.observe_batch(inference_s, done)
        for publish_many in self._batch_publishers:
            try:
                publish_many(messages)
            except Exception:
                logger.exception("A publisher failed on a batch of %d messages.", len(messages))
        for message in messages:
            for publish in self._publishers:
                try:
                    publish(message)
                except Exception:
                    logger.exception("A publisher failed on a message of stream %s.", message.stream_id)
        return messages
