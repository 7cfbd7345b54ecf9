"""The live quality monitor: each failure a channel can show is flagged."""

from __future__ import annotations

import numpy as np
import pytest

from rohde.core.quality_monitor import QualityMonitor, QualityThresholds

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


def test_the_neighbour_verdict_comes_one_estimate_late_on_a_shared_thread_as_inline() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from rohde.core.layouts import default_layout
    from rohde.simulation.simulator import SimulatorConfig, simulate_recording

    config = SimulatorConfig(gestures=("no_movement", "hand_close"), rest_s=0.3, gesture_s=1.5, repetitions=1)
    x = simulate_recording(config=config, subject=1, session=1, trial=1, condition="clean", seed=0).samples
    x = x[int(0.5 * 2048) : int(1.5 * 2048)].copy()
    x[1024:, 100] = x[1024:, 101]  # bridged from the middle on
    hop = 512  # one estimate per push, each running the detector
    every_estimate = QualityThresholds(quality_interval_s=0.25, neighbour_interval_s=0.25)
    with ThreadPoolExecutor(max_workers=1) as pool:
        monitors = [QualityMonitor(192, 2048.0, every_estimate, layout=default_layout()),
                    QualityMonitor(192, 2048.0, every_estimate, layout=default_layout(), executor=pool)]  # fmt: skip
        seen: list[list[bool]] = [[], []]
        for start in range(0, len(x), hop):
            for m, monitor in enumerate(monitors):
                monitor.push(x[start : start + hop])
                seen[m].append(100 in monitor.bad_channels)
    assert seen[0] == seen[1]  # the same verdicts at the same estimates, on the shared thread or not
    # The first estimate (1024 samples in) judges clean samples; the second judges the bridged half and shows the
    # first's verdict; the third shows the bridge.
    assert seen[0] == [False, False, False, True], seen[0]


def test_quality_statistics_match_their_definitions() -> None:
    """The estimate's RMS, mains share and 1-20 Hz RMS are those of the plain formulas (float32 rounding)."""
    fs, c = 2048.0, 12
    thresholds = QualityThresholds()
    n = int(thresholds.quality_window_s * fs)
    rng = np.random.default_rng(3)
    t = np.arange(3 * n)[:, None] / fs
    data = (_emg(rng, 3 * n, c, fs) + 30 * np.sin(2 * np.pi * 50 * t) * rng.random(c)
            + 80 * np.sin(2 * np.pi * 6 * t) * rng.random(c)).astype(np.float32)
    monitor = QualityMonitor(c, fs, thresholds)
    for start in range(0, len(data) - 37, 37):  # pulls that do not divide the ring: the window wraps
        monitor.push(data[start : start + 37])
    last = data[: monitor._written - monitor._since_estimate][-n:].astype(np.float64)  # the latest estimate's
    centred = last - last.mean(axis=0)
    power = np.abs(np.fft.rfft(centred * np.hanning(n)[:, None], axis=0)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / fs)
    above = freqs >= 20
    mains = np.zeros_like(above)
    for k in range(1, int(fs / 2 / 50) + 1):
        mains |= np.abs(freqs - 50 * k) <= 2
    low = (freqs >= 1) & (freqs < 20)
    scale = 2.0 / (n * np.sum(np.hanning(n) ** 2))
    expected = {0: centred.std(axis=0), 1: power[mains & above].sum(0) / power[above].sum(0),
                2: np.sqrt(power[low].sum(0) * scale)}
    got = {ch.channel: (ch.rms_uv, ch.powerline_share, ch.lowband_uv) for ch in monitor.channels}
    for i, values in expected.items():
        np.testing.assert_allclose([got[ch][i] for ch in range(c)], values, rtol=2e-4)


def test_mains_the_model_notches_is_reported_but_not_rebuilt() -> None:
    fs, n, c = 1000.0, 1000, 4
    data = _emg(np.random.default_rng(1), n, c, fs)
    data[:, 1] += (400 * np.sin(2 * np.pi * 50 * np.arange(n) / fs)).astype(np.float32)  # mains on a lifted contact
    data[:, 2] = 42.0  # flat
    notched = QualityMonitor(c, fs, removed_hz=(50.0, 100.0, 150.0))
    unnotched = QualityMonitor(c, fs)
    for start in range(0, n, 50):
        notched.push(data[start : start + 50])
        unnotched.push(data[start : start + 50])
    assert notched.bad_channels == unnotched.bad_channels == [1, 2]  # the contact report shows both
    assert notched.repair_channels == [2] and unnotched.repair_channels == [1, 2]


def test_a_channel_amid_dead_ones_is_rebuilt_but_not_reported() -> None:
    from rohde.core.layouts import default_layout

    layout = default_layout()
    data = _emg(np.random.default_rng(2), 1024, 192, 2048.0)
    index = layout.grids[1].index_array()
    centre = int(index[4, 4])
    patch = [int(ch) for ch in index[3:6, 3:6].ravel() if ch != centre]
    data[:, patch] = 42.0  # eight dead electrodes around one that still works
    monitor = QualityMonitor(192, 2048.0, layout=layout)
    for start in range(0, len(data), 128):
        monitor.push(data[start : start + 128])
    assert set(patch) <= set(monitor.bad_channels) and centre not in monitor.bad_channels
    assert set(monitor.repair_channels) == {*monitor.bad_channels, centre}
