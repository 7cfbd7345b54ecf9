"""The stream worker's pulls against a scripted inlet: one wake per window, model following, gaps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rohde.core.windows import window_ends
from rohde.server import stream_worker
from rohde.server.inference import ModelManager
from rohde.server.ingest_config import IngestConfig
from rohde.server.jobs import JobQueue, WindowJob
from rohde.server.lsl_inlet import StreamDescription, StreamQuery, import_pylsl
from rohde.server.metrics import ServerMetrics
from rohde.server.stream_worker import StreamWorker

from .conftest import FS_HZ, LSL_CONFIG, N_CHANNELS, ModelSet, wait_for

pytestmark = pytest.mark.timeout(60)


class ScriptedInlet:
    """Stands in for `InletReader`: an outlet's `chunk`-sample chunks, handed out as liblsl answers a
    `min_samples` wait when samples arrive in real time (whole chunks until at least `min_samples` are
    in, at most `max_chunk`). Timestamps jump by `jump_s` at sample `jump_at`. Records each pull's
    (samples delivered before it, min_samples, wait_s)."""

    def __init__(self, info: Any, *, buffer_s: int, max_chunk: int, lsl_config: Any = None, n_samples: int,
                 chunk: int, on_pull: Callable[[int], object], jump_at: int = 0, jump_s: float = 0.0) -> None:
        self.description = StreamDescription.from_info(info)
        self.max_chunk = max_chunk
        self.data = np.random.default_rng(0).standard_normal((n_samples, N_CHANNELS)).astype(np.float32)
        self.stamps = 100.0 + np.arange(n_samples) / FS_HZ + np.where(np.arange(n_samples) >= jump_at, jump_s, 0.0)
        self.chunk = chunk
        self.on_pull = on_pull
        self.arrived = self.delivered = 0
        self.pulls: list[tuple[int, int, float]] = []
        self.done = threading.Event()

    def describe(self, timeout_s: float) -> StreamDescription:
        return self.description

    def open(self, timeout_s: float) -> None:
        pass

    def use_mapping(self, mapping: Any) -> None:
        assert mapping.is_identity  # an unlabelled float32 stream of the model's channels passes unchanged

    def pull(self, wait_s: float = 0.0, *, min_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        if self.delivered == len(self.data):
            self.done.set()
            return self.data[:0], self.stamps[:0]
        self.pulls.append((self.delivered, min_samples, wait_s))
        self.on_pull(len(self.pulls))
        while self.arrived - self.delivered < min_samples and self.arrived < len(self.data):
            self.arrived = min(self.arrived + self.chunk, len(self.data))
        start, self.delivered = self.delivered, min(self.arrived, self.delivered + self.max_chunk)
        return self.data[start : self.delivered], self.stamps[start : self.delivered]

    def time_correction(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


def run_scripted(models: ModelManager, monkeypatch: pytest.MonkeyPatch, config: IngestConfig,
                 **script: Any) -> tuple[ScriptedInlet, list[WindowJob], StreamWorker, str]:
    """Run a stream worker over a `ScriptedInlet(**script)` to its end; the inlet, the windows, the
    worker and the metrics text."""
    made: list[ScriptedInlet] = []

    def make_inlet(info: Any, **kwargs: Any) -> ScriptedInlet:
        made.append(ScriptedInlet(info, **kwargs, **script))
        return made[-1]

    monkeypatch.setattr(stream_worker, "InletReader", make_inlet)
    metrics = ServerMetrics()
    jobs = JobQueue(100_000, metrics)
    worker = StreamWorker("s", query=StreamQuery(name="fake"), models=models, jobs=jobs,
                          metrics=metrics, config=config, announce=lambda *_: None)
    pylsl = import_pylsl(LSL_CONFIG)
    worker.attach(pylsl.StreamInfo("fake", "EMG", N_CHANNELS, FS_HZ, "float32", "fake-source"))
    worker.start()
    try:
        wait_for(lambda: made and made[0].done.is_set(), 10, interval_s=0.01)
    finally:
        worker.stop()
    return made[0], [jobs.get_nowait() for _ in range(jobs.qsize())], worker, metrics.render({})


def test_worker_waits_for_the_samples_missing_until_the_next_window(model_set: ModelSet,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # 200-sample windows every 50 samples, 7-sample outlet chunks, pulls of at most 100 samples; after
    # pull 12 the model changes to 300-sample windows, which restarts the windows at that stream sample.
    models = ModelManager(model_set.models_dir)
    models.activate("good")
    swap_after = 12
    config = IngestConfig(max_chunk_s=0.1, lsl_config=LSL_CONFIG)
    inlet, emitted, worker, _ = run_scripted(
        models, monkeypatch, config, n_samples=2020, chunk=7,
        on_pull=lambda n: models.activate("long") if n == swap_after else None)
    swap_at = inlet.pulls[swap_after][0]  # the new model's windows count from the next pull on

    def wanted(delivered: int) -> int:
        # Offline window ends (`window_ends`) of the model in force: the samples missing to the next one.
        offset, window = (0, 200) if delivered < swap_at else (swap_at, 300)
        ends = offset + window_ends(10_000, window, 50)
        return min(int(ends[ends > delivered][0]) - delivered, inlet.max_chunk)

    assert inlet.max_chunk == 100
    assert [(min_samples, wait_s) for delivered, min_samples, wait_s in inlet.pulls] == [
        (wanted(delivered), config.pull_wait_s) for delivered, _, _ in inlet.pulls
    ]
    assert [job.end_index for job in emitted if job.generation == 1][:3] == [200, 250, 300]
    assert [job.end_index for job in emitted if job.generation == 2][:2] == [300, 350]
    # One wake-up per window, where the outlet sent 2020 / 7 = 289 chunks; the 100-sample pull limit adds
    # one for the first 200-sample window and two for the first 300-sample one, and the stream ends mid-window.
    assert len(inlet.pulls) == len(emitted) + 4
    assert worker.samples_received == 2020


def test_gap_inside_one_pull_is_counted_and_restarts_the_windows(model_set: ModelSet,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # A pull now spans several outlet chunks; a 300 ms timestamp jump at sample 430 lands inside one.
    models = ModelManager(model_set.models_dir)
    models.activate("good")
    inlet, emitted, _, metrics = run_scripted(
        models, monkeypatch, IngestConfig(lsl_config=LSL_CONFIG), n_samples=1000, chunk=7,
        on_pull=lambda n: None, jump_at=430, jump_s=0.3)
    delivered = [start for start, _, _ in inlet.pulls]
    assert 430 not in delivered and min(delivered) < 430 < max(delivered)
    assert 'rohde_stream_gaps_total{stream="s"} 1' in metrics
    assert 'rohde_stream_missing_samples_total{stream="s"} 300' in metrics
    assert 'rohde_stream_overflows_total{stream="s"}' not in metrics
    # The windows restart at the gap: the first one after it ends 200 samples after sample 430.
    assert [job.end_index for job in emitted] == [*range(200, 431, 50), *range(200, 1000 - 430 + 1, 50)]
    assert emitted[5].lsl_time == pytest.approx(100.0 + (430 + 199) / FS_HZ + 0.3)
