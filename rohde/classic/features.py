"""Classic time-domain EMG features per channel (numpy only; used by baselines and evaluation).

All functions take windows `(n_windows, n_channels, window_samples)` of filtered EMG in uV and
return `(n_windows, n_channels)` (or `(n_windows, k * n_channels)` for the stacks; float32 for
float32 windows, else float64), the
Hudgins set: mean absolute value (MAV), waveform length (WL), zero crossings (ZC) and slope sign
changes (SSC), plus RMS and log-RMS.

ZC and SSC ignore changes smaller than `threshold_uv` so that baseline noise on a silent channel
does not count as activity: a zero crossing counts only when the two samples differ by at least
`threshold_uv`, a slope sign change only when the product of the two slopes is at least
`threshold_uv ** 2`. The default of 1 uV sits below surface-EMG rest levels (about 5-13 uV RMS on
the flexemg array) and above amplifier quantisation (0.003 mV per count there is 3 uV, so it is
zero for quantised steps of equal sign, which never count anyway).
"""

from __future__ import annotations

import numpy as np

from rohde.core.errors import ConfigError
from rohde.core.gestures import UNUSABLE
from rohde.core.preprocessing import PreprocessingConfig, filter_recording
from rohde.core.recording import Recording
from rohde.core.windows import WindowConfig, extract_windows, window_ends

DEFAULT_THRESHOLD_UV = 1.0
TD_FEATURES = ("mav", "wl", "zc", "ssc")
_LOG_FLOOR_UV = 1e-3  # keeps log-RMS finite on all-zero (dead) channels


def _check(windows: np.ndarray) -> np.ndarray:
    array = np.asarray(windows)
    if array.ndim != 3:
        raise ConfigError(f"Features need windows of shape (n_windows, n_channels, window_samples), got {array.shape}.")
    if array.shape[2] < 3:
        raise ConfigError(f"Windows need at least 3 samples for slope features, got {array.shape[2]}.")
    # float32 windows (recordings are stored as float32) are computed in float32: 4x faster than
    # float64 on the baselines' hundreds of thousands of windows, and no less exact than the data.
    return array if array.dtype == np.float32 else array.astype(np.float64, copy=False)


def _zero_crossings(x: np.ndarray, step: np.ndarray, threshold_uv: float) -> np.ndarray:
    """ZC counts from windows `x` and their `step = np.diff(x, axis=2)`."""
    crossing = (x[..., :-1] * x[..., 1:] < 0) & (np.abs(step) >= threshold_uv)
    return crossing.sum(axis=2).astype(x.dtype)


def _slope_sign_changes(step: np.ndarray, threshold_uv: float) -> np.ndarray:
    """SSC counts from `step = np.diff(x, axis=2)`: (x[t] - x[t-1]) * (x[t] - x[t+1]) = -step[t-1] * step[t]."""
    extremum = -(step[..., :-1] * step[..., 1:]) >= threshold_uv**2
    return extremum.sum(axis=2).astype(step.dtype)


def mav(windows: np.ndarray) -> np.ndarray:
    """Mean absolute value `(N, C)` in uV."""
    return np.mean(np.abs(_check(windows)), axis=2)


def waveform_length(windows: np.ndarray) -> np.ndarray:
    """Waveform length `(N, C)`: summed absolute sample-to-sample change, in uV."""
    return np.sum(np.abs(np.diff(_check(windows), axis=2)), axis=2)


def zero_crossings(windows: np.ndarray, *, threshold_uv: float = DEFAULT_THRESHOLD_UV) -> np.ndarray:
    """Zero crossings `(N, C)`: sign changes between neighbours that differ by >= `threshold_uv`."""
    x = _check(windows)
    return _zero_crossings(x, np.diff(x, axis=2), threshold_uv)


def slope_sign_changes(windows: np.ndarray, *, threshold_uv: float = DEFAULT_THRESHOLD_UV) -> np.ndarray:
    """Slope sign changes `(N, C)`: local extrema whose slopes' product is >= `threshold_uv ** 2`."""
    return _slope_sign_changes(np.diff(_check(windows), axis=2), threshold_uv)


def rms_features(windows: np.ndarray) -> np.ndarray:
    """Root mean square per channel `(N, C)` in uV."""
    x = _check(windows)
    return np.sqrt(np.mean(x * x, axis=2))


def log_rms_features(windows: np.ndarray) -> np.ndarray:
    """Natural log of the RMS per channel `(N, C)` (log uV), floored so dead channels stay finite."""
    return np.log(np.maximum(rms_features(windows), _LOG_FLOOR_UV))


def td_features(windows: np.ndarray, *, threshold_uv: float = DEFAULT_THRESHOLD_UV) -> np.ndarray:
    """Hudgins set `(N, 4 * C)`: blocks [MAV(C), WL(C), ZC(C), SSC(C)], channels in stream order.

    The same values as the four functions above; the windows are converted and differenced once
    (the baselines compute this for every window of a data set).
    """
    if threshold_uv < 0:
        raise ConfigError(f"threshold_uv must be >= 0, got {threshold_uv}.")
    x = _check(windows)
    step = np.diff(x, axis=2)  # (N, C, T - 1): x[t + 1] - x[t]
    return np.concatenate(
        [
            np.mean(np.abs(x), axis=2),
            np.abs(step).sum(axis=2),
            _zero_crossings(x, step, threshold_uv),
            _slope_sign_changes(step, threshold_uv),
        ],
        axis=1,
    )


FEATURE_SETS = {"rms": rms_features, "logrms": log_rms_features, "td": td_features}


def compute_features(windows: np.ndarray, kind: str) -> np.ndarray:
    """Features by name: one of FEATURE_SETS (`rms`, `logrms`, `td`)."""
    if kind not in FEATURE_SETS:
        raise ConfigError(f"Unknown feature set {kind!r}; use one of {sorted(FEATURE_SETS)}.")
    return FEATURE_SETS[kind](windows)


def recording_features(
    recording: Recording,
    *,
    preprocessing: PreprocessingConfig,
    window: WindowConfig,
    kind: str = "rms",
    chunk_windows: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Features of every usable window of a recording: (features `(N, F)`, labels `(N,)` int64).

    The recording is filtered with the shared causal chain from a zero state (as a stream),
    windows end every hop as `window_ends` counts them, a window's label is the label of its last
    sample, and windows holding any unusable (-1) sample are skipped. Windows are built and
    reduced chunk by chunk so a long 192-channel recording never sits in memory as windows.
    """
    if recording.fs_hz != preprocessing.fs_hz:
        raise ConfigError(
            f"Recording is sampled at {recording.fs_hz} Hz but preprocessing is set for {preprocessing.fs_hz} Hz."
        )
    if kind not in FEATURE_SETS:
        raise ConfigError(f"Unknown feature set {kind!r}; use one of {sorted(FEATURE_SETS)}.")
    filtered = filter_recording(recording.samples, preprocessing)
    n_window = window.window_samples(recording.fs_hz)
    ends = window_ends(recording.n_samples, n_window, window.hop_samples(recording.fs_hz))
    labels = recording.labels.astype(np.int64)
    unusable = np.concatenate([[0], np.cumsum(labels == UNUSABLE)])  # prefix counts of -1 samples
    keep = (unusable[ends] - unusable[ends - n_window]) == 0
    ends = ends[keep]
    n_features = {"rms": 1, "logrms": 1, "td": 4}[kind] * recording.n_channels
    if len(ends) == 0:
        return np.zeros((0, n_features)), np.zeros(0, dtype=np.int64)
    parts = [
        compute_features(extract_windows(filtered, ends[i : i + chunk_windows], n_window), kind)
        for i in range(0, len(ends), chunk_windows)
    ]
    return np.concatenate(parts, axis=0), labels[ends - 1]
