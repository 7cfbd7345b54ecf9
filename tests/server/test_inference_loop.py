"""The inference thread on real ONNX Runtime sessions: queued windows of two streams come out as
published decisions, numbered per stream, each run by the engine of the generation it was made for."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rohde.core.model_package import load_model_package
from rohde.core.preprocessing import PreprocessingConfig
from rohde.server.inference import ModelManager
from rohde.server.inference_loop import InferenceLoop
from rohde.server.jobs import JobQueue, WindowJob
from rohde.server.messages import PredictionMessage
from rohde.server.metrics import ServerMetrics

from .conftest import FS_HZ, ModelSet, wait_for, windows_and_labels

pytestmark = pytest.mark.timeout(60)


def make_jobs(windows: np.ndarray, stream_id: str, generation: int, *, first: int = 0,
              reject_reason: str | None = None) -> list[WindowJob]:
    return [WindowJob(stream_id=stream_id, generation=generation, window=w, end_index=(first + i + 1) * 50,
                      lsl_time=1000.0 + first + i, pulled_at=time.perf_counter(), bad_channels=(),
                      reject_reason=reject_reason, flags=())
            for i, w in enumerate(windows)]


def test_queued_windows_are_published_per_stream_with_their_generations_engine(model_set: ModelSet) -> None:
    models = ModelManager(model_set.models_dir)
    models.activate("good")
    package = load_model_package(model_set.models_dir / "good")
    windows, _, _ = windows_and_labels(model_set.recording, PreprocessingConfig(fs_hz=FS_HZ),
                                       package.normalization, hop=250)
    windows = windows[:12].astype(np.float32)  # (12, C, W), several gestures
    metrics = ServerMetrics()
    jobs = JobQueue(100, metrics)
    published: list[PredictionMessage] = []
    batches: list[list[PredictionMessage]] = []
    loop = InferenceLoop(jobs=jobs, models=models, metrics=metrics, publishers=[published.append], vote_k=3,
                         confidence_threshold=0.5, max_batch=4, batch_publishers=[lambda b: batches.append(list(b))])
    # Generation 1 ("good") for the first half of each stream, then generation 2 ("good2"); stream "b"
    # has a window its worker rejected for non-finite input, and three windows of a generation that is
    # no longer loaded.
    queued = [*make_jobs(windows[:6], "a", 1), *make_jobs(windows[6:9], "b", 1),
              *make_jobs(windows[9:10], "b", 1, first=3, reject_reason="nonfinite_input")]
    for job in queued:
        jobs.offer(job)
    loop.start()
    wait_for(lambda: len(published) == len(queued), 10, interval_s=0.02)
    models.activate("good2")
    later = [*make_jobs(windows[6:], "a", 2, first=6), *make_jobs(windows[:2], "b", 2, first=4),
             *make_jobs(windows[:3], "b", 99, first=6)]
    for job in later:
        jobs.offer(job)
    wait_for(lambda: loop.windows_dropped_no_model == 3 and len(published) == len(queued) + len(later) - 3, 10,
             interval_s=0.02)
    loop.stop()
    loop.stop()  # idempotent
    assert not loop.alive and loop.error is None
    ran = [job for job in queued + later if job.generation != 99]
    for stream_id in ("a", "b"):
        mine = [m for m in published if m.stream_id == stream_id]
        expected = [job for job in ran if job.stream_id == stream_id]
        assert [m.seq for m in mine] == list(range(len(expected)))  # one per window, in order
        assert [m.lsl_time for m in mine] == [job.lsl_time for job in expected]
        for message, job in zip(mine, expected, strict=True):
            engine = models.engine_for(job.generation)
            assert engine is not None
            assert message.model_name == ("good" if job.generation == 1 else "good2")
            assert message.model_generation == job.generation  # the client can check which activation ran it
            np.testing.assert_allclose(message.probabilities, engine.run(job.window[None])[0], rtol=1e-5, atol=1e-6)
            assert message.labels == list(package.metadata.labels) and message.vote_k == 3
    # A batch publisher gets each batch's messages in one call, in the order the others get them one by one.
    assert [m for batch in batches for m in batch] == published and max(len(b) for b in batches) > 1
    (nonfinite,) = [m for m in published if m.reject_reason == "nonfinite_input"]
    assert nonfinite.stream_id == "b" and nonfinite.rejected and nonfinite.seq == 3
    text = metrics.render({})
    assert 'rohde_windows_processed_total{stream="a"} 12' in text
    assert 'rohde_windows_processed_total{stream="b"} 6' in text
    assert "rohde_windows_dropped_total 3" in text


def test_a_failing_publisher_does_not_stop_the_others(model_set: ModelSet) -> None:
    models = ModelManager(model_set.models_dir)
    models.activate("good")
    window = np.zeros((16, models.active.package.metadata.window_samples), np.float32)  # type: ignore[union-attr]
    published: list[PredictionMessage] = []

    def broken(message: PredictionMessage) -> None:
        raise RuntimeError("subscriber gone")

    metrics = ServerMetrics()
    loop = InferenceLoop(jobs=JobQueue(10, metrics), models=models, metrics=metrics,
                         publishers=[broken, published.append], vote_k=1, confidence_threshold=0.0, max_batch=4)
    messages = loop.process(make_jobs(np.stack([window, window]), "a", 1))
    assert [m.seq for m in messages] == [0, 1] and published == messages
