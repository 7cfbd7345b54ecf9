"""Time-domain features on hand-computed windows, and windows of a labelled recording."""

from __future__ import annotations

import numpy as np
import pytest

from rohde.classic.features import (
    compute_features,
    log_rms_features,
    mav,
    recording_features,
    rms_features,
    slope_sign_changes,
    td_features,
    waveform_length,
    zero_crossings,
)
from rohde.core.errors import ConfigError
from rohde.core.layouts import grid_layout
from rohde.core.preprocessing import PreprocessingConfig, filter_recording
from rohde.core.recording import Recording
from rohde.core.windows import WindowConfig, extract_windows, window_ends


def test_features_of_a_known_window() -> None:
    # One window, two channels: an alternating +-2 signal and a ramp.
    alternating = np.array([2.0, -2.0, 2.0, -2.0, 2.0])
    ramp = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    windows = np.stack([alternating, ramp])[None]  # (1, 2, 5)
    np.testing.assert_allclose(mav(windows), [[2.0, 2.0]])
    np.testing.assert_allclose(waveform_length(windows), [[16.0, 4.0]])
    np.testing.assert_allclose(zero_crossings(windows), [[4.0, 0.0]])
    np.testing.assert_allclose(slope_sign_changes(windows), [[3.0, 0.0]])
    np.testing.assert_allclose(rms_features(windows), [[2.0, np.sqrt(6.0)]])
    np.testing.assert_allclose(log_rms_features(windows), np.log([[2.0, np.sqrt(6.0)]]))
    td = td_features(windows)
    assert td.shape == (1, 8)  # blocks [MAV, WL, ZC, SSC] of 2 channels each
    np.testing.assert_allclose(td[0], [2, 2, 16, 4, 4, 0, 3, 0])


def test_threshold_ignores_small_noise() -> None:
    tiny = 0.1 * np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])[None, None]
    assert zero_crossings(tiny, threshold_uv=1.0)[0, 0] == 0
    assert slope_sign_changes(tiny, threshold_uv=1.0)[0, 0] == 0
    assert zero_crossings(tiny, threshold_uv=0.0)[0, 0] == 5
    assert slope_sign_changes(tiny, threshold_uv=0.0)[0, 0] == 4


def test_dead_channel_and_bad_shapes() -> None:
    zeros = np.zeros((3, 4, 10))
    assert np.isfinite(log_rms_features(zeros)).all()
    assert (td_features(zeros) == 0).all()
    with pytest.raises(ConfigError, match="n_windows, n_channels"):
        rms_features(np.zeros((4, 10)))
    with pytest.raises(ConfigError, match="feature set"):
        compute_features(zeros, "wamp")
    with pytest.raises(ConfigError, match="threshold_uv"):
        td_features(zeros, threshold_uv=-1.0)


def test_recording_features_label_last_sample_and_skip_unusable() -> None:
    fs_hz = 1000.0
    rng = np.random.default_rng(1)
    n = 3000
    labels = np.repeat([0, 1, 2], 1000).astype(np.int16)
    labels[1400:1500] = -1
    amplitude = np.array([5.0, 50.0, 20.0])[np.maximum(labels, 0)]
    samples = rng.normal(size=(n, 4)) * amplitude[:, None]
    rec = Recording(
        samples=samples, fs_hz=fs_hz, layout=grid_layout(1, 2, 2), labels=labels, gesture_names=("a", "b", "c")
    )
    pre = PreprocessingConfig(fs_hz=fs_hz)
    window = WindowConfig(200.0, 50.0)
    X, y = recording_features(rec, preprocessing=pre, window=window, kind="rms", chunk_windows=7)

    ends = window_ends(n, 200, 50)
    keep = np.array([not (labels[e - 200 : e] == -1).any() for e in ends])
    np.testing.assert_array_equal(y, labels[ends[keep] - 1])
    expected = rms_features(extract_windows(filter_recording(samples, pre), ends[keep], 200))
    np.testing.assert_allclose(X, expected, rtol=1e-6)
    assert X.shape == (keep.sum(), 4)
    assert -1 not in y
    # Windows over the unusable stretch [1400, 1500) are gone: ends 1450 .. 1650 are skipped.
    assert not set(range(1450, 1700, 50)) & set(ends[keep].tolist())

    with pytest.raises(ConfigError, match="Hz"):
        recording_features(rec, preprocessing=PreprocessingConfig(fs_hz=2048.0), window=window)
    X_td, _ = recording_features(rec, preprocessing=pre, window=window, kind="td")
    assert X_td.shape == (keep.sum(), 16)
