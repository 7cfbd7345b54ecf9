"""Pure parts of the server: decisions, quality monitor, hub queues, metrics text, settings."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from rohde.core.errors import ConfigError
from rohde.server.decisions import DecisionSmoother
from rohde.server.hub import Hub
from rohde.server.messages import PredictionMessage, StatusMessage
from rohde.server.metrics import ServerMetrics
from rohde.server.quality import QualityMonitor, QualityThresholds
from rohde.server.settings import load_settings

pytestmark = pytest.mark.timeout(60)


def probs(index: int, confidence: float, n: int = 4) -> np.ndarray:
    p = np.full(n, (1 - confidence) / (n - 1))
    p[index] = confidence
    return p


def test_majority_vote_and_rejection() -> None:
    smoother = DecisionSmoother(k=3, confidence_threshold=0.6)
    assert smoother.update(probs(1, 0.9)).gesture_index == 1
    assert smoother.update(probs(2, 0.9)).gesture_index == 2  # tie 1:1 -> most recent
    d = smoother.update(probs(1, 0.9))
    assert (d.gesture_index, d.rejected) == (1, False)
    low = smoother.update(probs(3, 0.4))
    assert low.rejected and low.reject_reason == "low_confidence"
    assert low.window_index == 3 and low.gesture_index == 1  # a rejected window does not vote
    forced = smoother.update(probs(3, 0.95), input_reject_reason="nonfinite_input")
    assert forced.rejected and forced.reject_reason == "nonfinite_input"
    assert smoother.update(probs(2, 0.9)).gesture_index == 2  # history now 2, 1, 2


def test_smoother_validates_parameters() -> None:
    with pytest.raises(ConfigError, match="vote k"):
        DecisionSmoother(k=0, confidence_threshold=0.5)
    with pytest.raises(ConfigError, match="confidence_threshold"):
        DecisionSmoother(k=3, confidence_threshold=1.5)


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


def _prediction(stream: str, seq: int) -> PredictionMessage:
    return PredictionMessage(
        stream_id=stream, seq=seq, lsl_time=1.0, server_time=time.time(), gesture="a", gesture_index=0,
        confidence=0.9, window_gesture="a", probabilities=[0.9, 0.1], labels=["a", "b"], rejected=False,
        vote_k=3, confidence_threshold=0.5, latency_ms=1.0, model_name="m", model_version="1", bad_channels=[],
    )


def test_slow_client_loses_oldest_and_never_stalls_others() -> None:
    dropped: list[int] = []

    async def scenario() -> tuple[list[int], list[int], float]:
        hub = Hub(queue_size=8, on_drop=dropped.append)
        hub.bind(asyncio.get_running_loop())
        fast, slow = hub.register(), hub.register()
        fast_seen: list[int] = []
        slow_seen: list[int] = []

        async def reader(client, seen, delay):  # type: ignore[no-untyped-def]
            while len(seen) < 200 and (not seen or seen[-1] < 199):
                text = await hub.next_message(client)
                seen.append(json.loads(text)["seq"])
                await asyncio.sleep(delay)

        tasks = [asyncio.create_task(reader(fast, fast_seen, 0)), asyncio.create_task(reader(slow, slow_seen, 0.02))]
        started = time.perf_counter()
        for seq in range(200):
            hub.publish(_prediction("s", seq))  # never awaits a client
            await asyncio.sleep(0.001)
        publish_s = time.perf_counter() - started
        await asyncio.wait_for(tasks[0], 5)
        await asyncio.wait_for(tasks[1], 10)
        return fast_seen, slow_seen, publish_s

    fast_seen, slow_seen, publish_s = asyncio.run(scenario())
    assert fast_seen == list(range(200))
    assert slow_seen[-1] == 199 and len(slow_seen) < 200  # lost the oldest, kept the newest
    assert sum(dropped) == 200 - len(slow_seen)
    assert publish_s < 2.0


def test_hub_filters_by_stream() -> None:
    async def scenario() -> list[str]:
        hub = Hub(queue_size=4)
        only_b = hub.register("b")
        hub.publish(_prediction("a", 0))
        hub.publish(_prediction("b", 0))
        hub.publish(StatusMessage(event="model_changed", server_time=0.0))
        return [json.loads(await hub.next_message(only_b)).get("stream_id") for _ in range(2)]

    assert asyncio.run(scenario()) == ["b", None]


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
