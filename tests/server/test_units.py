"""Pure parts of the server: quality monitor, metrics text, settings, and the stream worker's pulls
against a scripted inlet."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rohde.core.errors import ConfigError
from rohde.core.windows import window_ends
from rohde.server import ingest
from rohde.server.inference import ModelManager
from rohde.server.lsl_inlet import StreamDescription, import_pylsl
from rohde.server.metrics import ServerMetrics
from rohde.server.quality import QualityMonitor, QualityThresholds
from rohde.server.settings import load_settings

from .conftest import FS_HZ, LSL_CONFIG, N_CHANNELS, ModelSet, wait_for

pytestmark = pytest.mark.timeout(60)


def _emg(rng: np.random.Generator, n: int, c: int, fs: float) -> np.ndarray:
    # Broadband noise band-limited to the EMG band by a crude difference filter: enough for the ratios.
    x = rng.standard_normal((n + 1, c)) * 20.0
    return np.diff(x, axis=0).astype(np.float32) + 150.0


def test_quality_flags_each_failure() -> None:
    fs, n, c = 1000.0, 1000, 6
    rng = np.random.default_rng(0)
    t = np.arange(n)[:, None] / fs
    data = _emg(rng, n, c, fs)
    data[:, 1] = 42.0  # flat
    data[:, 2] = np.where(np.arange(n) % 50 == 0, 7000.0, data[:, 2])  # saturated spikes
    data[:, 3] += (400 * np.sin(2 * np.pi * 50 * t[:, 0])).astype(np.float32)  # mains
    data[:, 4] += (600 * np.sin(2 * np.pi * 4.5 * t[:, 0])).astype(np.float32)  # 4.5 Hz tapping
    monitor = QualityMonitor(c, fs, QualityThresholds(window_s=0.5, interval_s=0.1))
    nonfinite = np.zeros(c, dtype=bool)
    nonfinite[5] = True
    for start in range(0, n, 50):
        monitor.push(data[start : start + 50], nonfinite if start == 900 else None)
    flags = {ch.channel: set(ch.flags) for ch in monitor.channels}
    assert flags[0] == set()
    assert "flat" in flags[1]
    assert "saturated" in flags[2]
    assert "powerline" in flags[3]
    assert "artifact" in flags[4]
    assert "nonfinite" in flags[5]
    assert monitor.bad_channels == [1, 2, 3, 4, 5]
    assert monitor.hard_bad_fraction() == pytest.approx(3 / 6)


def test_metrics_text_format() -> None:
    metrics = ServerMetrics()
    metrics.add("windows_processed", "s1", 3)
    metrics.add("gaps", "s1")
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


def test_settings_precedence(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "server.toml"
    config.write_text('vote_k = 7\nport = 9100\nstream_name = "from-file"\n')
    monkeypatch.setenv("ROHDE_PORT", "9200")
    settings = load_settings(config, stream_name="from-cli")
    assert (settings.vote_k, settings.port, settings.stream_name) == (7, 9200, "from-cli")
    assert settings.stream_query == {"name": "from-cli", "type": "EMG"}
    monkeypatch.setenv("ROHDE_PROVIDERS", "CPUExecutionProvider")
    assert load_settings().providers == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match="vote_k"):
        load_settings(vote_k=0)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.json")


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

    def open(self, timeout_s: float) -> None:
        pass

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


def run_scripted(models: ModelManager, monkeypatch: pytest.MonkeyPatch, config: ingest.IngestConfig,
                 **script: Any) -> tuple[ScriptedInlet, list[ingest.WindowJob], ingest.StreamWorker, str]:
    """Run a stream worker over a `ScriptedInlet(**script)` to its end; the inlet, the windows, the
    worker and the metrics text."""
    made: list[ScriptedInlet] = []

    def make_inlet(info: Any, **kwargs: Any) -> ScriptedInlet:
        made.append(ScriptedInlet(info, **kwargs, **script))
        return made[-1]

    monkeypatch.setattr(ingest, "InletReader", make_inlet)
    metrics = ServerMetrics()
    jobs = ingest.JobQueue(100_000, metrics)
    worker = ingest.StreamWorker("s", query=ingest.StreamQuery(name="fake"), models=models, jobs=jobs,
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
    config = ingest.IngestConfig(max_chunk_s=0.1, lsl_config=LSL_CONFIG)
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
        models, monkeypatch, ingest.IngestConfig(lsl_config=LSL_CONFIG), n_samples=1000, chunk=7,
        on_pull=lambda n: None, jump_at=430, jump_s=0.3)
    delivered = [start for start, _, _ in inlet.pulls]
    assert 430 not in delivered and min(delivered) < 430 < max(delivered)
    assert 'rohde_stream_gaps_total{stream="s"} 1' in metrics
    assert 'rohde_stream_missing_samples_total{stream="s"} 300' in metrics
    assert 'rohde_stream_overflows_total{stream="s"}' not in metrics
    # The windows restart at the gap: the first one after it ends 200 samples after sample 430.
    assert [job.end_index for job in emitted] == [*range(200, 431, 50), *range(200, 1000 - 430 + 1, 50)]
    assert emitted[5].lsl_time == pytest.approx(100.0 + (430 + 199) / FS_HZ + 0.3)


def _job(stream_id: str, end: int) -> ingest.WindowJob:
    return ingest.WindowJob(stream_id=stream_id, generation=0, window=np.zeros((2, 4), np.float32), end_index=end,
                            lsl_time=0.0, pulled_at=0.0, bad_channels=(), reject_reason=None, flags=())


def test_full_inference_queue_sheds_the_oldest_windows_and_counts_them_per_stream() -> None:
    metrics = ServerMetrics()
    jobs = ingest.JobQueue(3, metrics)
    for end in range(5):
        jobs.offer(_job("a" if end < 2 else "b", end))
    kept = [jobs.get_nowait().end_index for _ in range(jobs.qsize())]
    assert kept == [2, 3, 4]  # the newest windows stay, in order
    assert metrics.windows_shed == {"a": 2}
    assert 'rohde_windows_shed_total{stream="a"} 2' in metrics.render({})
