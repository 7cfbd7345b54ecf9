"""The live quality monitor: each failure a channel can show is flagged."""

from __future__ import annotations

import numpy as np
import pytest

from rohde.server.quality import QualityMonitor, QualityThresholds

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
    monitor = QualityMonitor(c, fs, QualityThresholds(quality_window_s=0.5, quality_interval_s=0.1))
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


def test_the_neighbour_detector_flags_what_amplitude_tests_miss() -> None:
    from rohde.core.layouts import default_layout
    from rohde.simulation.simulator import SimulatorConfig, simulate_recording

    config = SimulatorConfig(gestures=("no_movement", "hand_close"), rest_s=0.3, gesture_s=1.5, repetitions=1)
    x = simulate_recording(config=config, subject=1, session=1, trial=1, condition="clean", seed=0).samples
    x = x[int(0.5 * 2048) : int(1.5 * 2048)].copy()  # (2048, 192), during the gesture
    x[:, 100] = x[:, 101]  # a gel bridge: ordinary amplitude, spectrum and band, but a copy of its neighbour
    monitor = QualityMonitor(192, 2048.0, layout=default_layout())
    plain = QualityMonitor(192, 2048.0)
    for start in range(0, len(x), 128):
        monitor.push(x[start : start + 128])
        plain.push(x[start : start + 128])
    assert {100, 101} <= set(monitor.bad_channels)
    assert "neighbour" in {f for ch in monitor.channels if ch.channel == 100 for f in ch.flags}
    assert not {100, 101} & set(plain.bad_channels)  # without the layout the monitor cannot see it
    assert len(monitor.bad_channels) <= 6
