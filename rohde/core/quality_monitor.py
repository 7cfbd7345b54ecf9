"""Live per-channel contact quality from the raw (unfiltered) signal.

Every `quality_interval_s` the monitor looks at the last `quality_window_s` of raw samples of each
channel and flags it as:

- `flat`: standard deviation below `flat_std_uv` (a dead or disconnected lead; real HD-EMG at rest
  is several uV RMS);
- `saturated`: some |sample| at or above `saturation_uv` (the amplifier's input range is reached);
- `powerline`: more than `powerline_ratio` (0.8) of the power above 20 Hz lies within +-2 Hz of
  the mains frequency or its harmonics (a loose contact picks up mains: the LC signature). On the
  simulator, clean channels stay below 0.67 (p99, at rest, where EMG is weakest); loose-contact
  channels reach 0.9-1.0;
- `artifact`: the 1-20 Hz band (which surface EMG, band-limited above 20 Hz, does not occupy)
  carries more than `artifact_uv` (100 uV) RMS: tapping and movement transients (the CA
  signature) and the baseline jumps of a loose contact. Clean simulated channels: p99 51 uV;
  channels hit by contact artifacts: p90 138 uV; loose contacts: median 176 uV;
- `nonfinite`: NaN or Inf samples arrived within the last `quality_window_s` (set by the window
  assembler);
- `neighbour`: the shared neighbour detector (`rohde.core.channel_quality`, given the layout) finds
  the channel unlike its grid neighbours: flat, saturated, unpredictable from them, a slow artifact
  or mains hum far above theirs, a transient (a pop, step or burst) the neighbours do not share, or
  bridged to one of them.

The spectrum is a Hann-windowed FFT of the mean-removed raw window. A channel with any flag is in
`bad_channels` (the contact-quality report). `repair_channels` are those whose fault reaches the model:
told the frequencies its preprocessing notches (`removed_hz`), the neighbour detector judges channels
with them removed, and a `powerline` flag alone is no reason to rebuild a channel when the notches
cover the mains it measures.

The neighbour detector is the costliest test (a few ms of a 192-channel window), so its verdict takes effect
one estimate after the window it judged, the same offline and live: the server runs it on one thread shared by
every stream (`executor`), off the streams' own threads, and the stream only waits for a verdict still not in
by the next estimate.

The monitor lives in the core, not in the server, so offline evaluation can replay what the server does
to a recording (`served_repair_sets`): a package trained with quality masking is scored on the windows
the server would give it, rebuilt with the channels this monitor would have flagged at that moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft

from rohde.core.channel_quality import ChannelQualityDetector, with_enclosed
from rohde.core.errors import ConfigError
from rohde.core.layouts import ElectrodeLayout
from rohde.core.windows import ring_write

FLAGS = ("flat", "saturated", "powerline", "artifact", "nonfinite", "neighbour")
_HARD = [FLAGS.index(f) for f in ("flat", "saturated", "nonfinite")]  # no usable EMG at all
_POWERLINE = FLAGS.index("powerline")


@dataclass(frozen=True)
class QualityThresholds:
    """The quality monitor's knobs; `ServerSettings` takes its defaults from here, under the same names."""

    quality_window_s: float = 0.5  # raw history per estimate
    quality_interval_s: float = 0.25  # time between estimates
    flat_std_uv: float = 0.5  # below: flat
    saturation_uv: float = 6000.0  # at or above: saturated
    powerline_ratio: float = 0.8  # mains share of >20 Hz power above which: powerline
    artifact_uv: float = 100.0  # 1-20 Hz RMS above which: artifact
    mains_hz: float = 50.0  # power-line fundamental
    neighbour_interval_s: float = 1.0  # time between runs of the neighbour detector (its FFT and solves); 0: off


@dataclass(frozen=True)
class ChannelQuality:
    channel: int
    flags: tuple[str, ...]
    rms_uv: float
    powerline_share: float
    lowband_uv: float


class QualityMonitor:
    """Keeps the last `quality_window_s` of raw `(n_samples, n_channels)` uV and re-estimates quality."""

    def __init__(self, n_channels: int, fs_hz: float, thresholds: QualityThresholds | None = None,
                 layout: ElectrodeLayout | None = None, removed_hz: Sequence[float] = (),
                 executor: Executor | None = None) -> None:  # fmt: skip
        if n_channels < 1 or fs_hz <= 0:
            raise ConfigError(f"QualityMonitor needs n_channels >= 1 and fs_hz > 0, got {n_channels}, {fs_hz}.")
        self.thresholds = thresholds or QualityThresholds()
        self.n_channels = n_channels
        self.fs_hz = fs_hz
        self._n = max(16, int(round(self.thresholds.quality_window_s * fs_hz)))
        self._raw = np.zeros((self._n, n_channels), dtype=np.float32)
        self._written = 0
        self._since_estimate = 0
        self._interval = max(1, int(round(self.thresholds.quality_interval_s * fs_hz)))
        # The neighbour detector needs the grid map; without a layout (or a mismatched one) it stays off. It
        # judges the newest 250 ms (its thresholds were chosen on 250 ms windows; half the cost of 500 ms).
        self._detector_n = min(self._n, max(16, int(round(0.25 * fs_hz))))
        self._detector = (ChannelQualityDetector(layout, fs_hz, self._detector_n, removed_hz=removed_hz)
                          if layout is not None and layout.n_channels == n_channels
                          and self.thresholds.neighbour_interval_s > 0 else None)  # fmt: skip
        # Contacts fail for seconds at least: judging every second keeps its cost off most estimates.
        t = self.thresholds
        self._neighbour_every = max(1, int(round(t.neighbour_interval_s / t.quality_interval_s)))
        self._estimates = 0
        self._neighbour_bad = np.zeros(n_channels, dtype=bool)
        self._executor = executor  # where the detector runs; None: in the caller's thread
        self._pending: Future[np.ndarray] | np.ndarray | None = None  # the verdict that takes effect next
        self._nonfinite_until = np.zeros(n_channels, dtype=np.int64)  # sample index until which flagged
        freqs = np.fft.rfftfreq(self._n, 1.0 / fs_hz)
        self._taper = np.hanning(self._n).astype(np.float32)[:, None]
        # Band RMS from the tapered spectrum (Parseval): sqrt(2 * sum |X|^2 / (n * sum(taper^2))).
        self._power_scale = np.float32(2.0 / (self._n * float(np.sum(self._taper.astype(np.float64) ** 2))))
        self._low_band = (freqs >= 1.0) & (freqs < 20.0)
        self._above_20 = freqs >= 20.0
        mains = np.zeros_like(freqs, dtype=bool)
        k = 1
        while k * self.thresholds.mains_hz < fs_hz / 2:
            mains |= np.abs(freqs - k * self.thresholds.mains_hz) <= 2.0
            k += 1
        self._mains = mains & self._above_20
        # (F, 3) columns: above 20 Hz, mains bins above 20 Hz, 1-20 Hz; a band's sum is one product with the power.
        self._band_weights = np.stack([self._above_20, self._mains, self._low_band], axis=1).astype(np.float32)
        self._flags = np.zeros((n_channels, len(FLAGS)), dtype=bool)  # latest estimate, per channel and flag
        self._stats = np.zeros((n_channels, 3))  # rms_uv, powerline_share, lowband_uv
        self.bad_channels: list[int] = []
        self.repair_channels: list[int] = []
        # The mains the `powerline` test measures is notched before the model: that flag alone spares a channel.
        notched = {round(f, 3) for f in removed_hz}
        self._mains_removed = round(self.thresholds.mains_hz, 3) in notched
        self._hard_fraction = 0.0  # share of channels flagged flat, saturated or non-finite

    def push(self, raw: np.ndarray, nonfinite_channels: np.ndarray | None = None) -> None:
        """Add raw `(n_samples, n_channels)` uV (non-finite values already replaced)."""
        n = raw.shape[0]
        if n == 0:
            return
        if nonfinite_channels is not None and nonfinite_channels.any():
            self._nonfinite_until[nonfinite_channels] = self._written + n + self._n
        # Ring buffer: row (i % window) holds sample i, so no copy of the history per chunk.
        tail = raw[-self._n :]
        ring_write(self._raw, self._written + n - len(tail), tail)
        self._written += n
        self._since_estimate += n
        if self._since_estimate >= self._interval and self._written >= self._n:
            self._since_estimate = 0
            self._estimate()

    def _estimate(self) -> None:
        # Vectorised in float32 with as few passes over the (n, C) window as possible: it runs in the stream's
        # thread beside the other streams and the inference thread (no per-channel Python loop, no temporaries
        # beyond the spectrum).
        t = self.thresholds
        start = self._written % self._n  # the ring's oldest row
        raw = np.concatenate((self._raw[start:], self._raw[:start]))  # (n, C) oldest first, for the taper
        peak = np.abs(raw).max(axis=0)
        neighbour = self._neighbour(raw)
        centred = np.subtract(raw, raw.mean(axis=0), out=raw)  # in place: raw is not needed any more
        # Standard deviation as a sum of squares: the mean is already removed (what `std` does again would
        # only subtract its float32 rounding).
        std = np.sqrt(np.einsum("ij,ij->j", centred, centred) / np.float32(self._n))
        # One transform per channel along the last axis of the transposed view (pocketfft runs it faster than
        # along axis 0 of the same memory).
        spectrum = sp_fft.rfft(np.multiply(centred, self._taper, out=centred).T, axis=-1)  # (C, F) complex64
        # |X|^2 summed per band as one product: (C, F) power @ (F, 3) band weights.
        above, mains, low = ((spectrum.real**2 + spectrum.imag**2) @ self._band_weights).T
        above += 1e-12
        mains_share = mains / above
        low_uv = np.sqrt(low * self._power_scale)
        flat = std < t.flat_std_uv
        masks = {
            "flat": flat,
            "saturated": peak >= t.saturation_uv,
            "powerline": ~flat & (mains_share > t.powerline_ratio),
            "artifact": low_uv > t.artifact_uv,
            "nonfinite": self._nonfinite_until > self._written,
            "neighbour": neighbour,
        }
        self._flags = np.stack([masks[f] for f in FLAGS], axis=1)  # (n_channels, n_flags)
        self._stats = np.stack([std, mains_share, low_uv], axis=1).astype(np.float64)  # (n_channels, 3)
        self.bad_channels = np.flatnonzero(self._flags.any(axis=1)).tolist()
        reaching = self._flags if not self._mains_removed else np.delete(self._flags, _POWERLINE, axis=1)
        repair = np.asarray(reaching.any(axis=1), dtype=bool)
        if self._detector is not None:  # a channel amid rebuilt ones is rebuilt too (`with_enclosed`)
            repair = with_enclosed(repair, self._detector.neighbours)
        self.repair_channels = np.flatnonzero(repair).tolist()
        self._hard_fraction = float(self._flags[:, _HARD].any(axis=1).mean())

    def _neighbour(self, raw: np.ndarray) -> np.ndarray:
        """(C,) the neighbour detector's verdict: on the newest samples of the estimate before, renewed every
        `neighbour_interval_s` (module docstring)."""
        if self._detector is None:
            return self._neighbour_bad
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._neighbour_bad = pending.result() if isinstance(pending, Future) else pending
        if self._estimates % self._neighbour_every == 0:
            detector, newest = self._detector, raw[-self._detector_n :]
            if self._executor is None:
                self._pending = detector.detect(newest).bad
            else:  # a copy: the estimate goes on to overwrite `raw`
                self._pending = self._executor.submit(lambda window: detector.detect(window).bad, newest.copy())
        self._estimates += 1
        return self._neighbour_bad

    @property
    def channels(self) -> list[ChannelQuality]:
        """Per-channel quality of the latest estimate (built on demand, for the REST API)."""
        return [
            ChannelQuality(c, tuple(f for f, on in zip(FLAGS, self._flags[c], strict=True) if on),
                           float(self._stats[c, 0]), float(self._stats[c, 1]), float(self._stats[c, 2]))
            for c in range(self.n_channels)
        ]

    def hard_bad_fraction(self) -> float:
        """Share of channels that carry no usable EMG (flat, saturated or non-finite)."""
        return self._hard_fraction

    def summary(self) -> dict[str, object]:
        counts = {flag: int(n) for flag, n in zip(FLAGS, self._flags.sum(axis=0), strict=True)}
        return {"bad_channels": list(self.bad_channels), "flag_counts": counts}


def served_repair_sets(raw: np.ndarray, ends: np.ndarray, monitor: QualityMonitor) -> list[tuple[int, ...]]:
    """For each window ending at sample `ends[i]` of a raw `(n_samples, C)` uV recording, the channels the
    server rebuilds in it: the monitor's `repair_channels` after it has seen the samples before the window's
    last hop (the server pushes a pull to the monitor after emitting that pull's windows, so a window is
    judged by the estimate of the pull before). Pulls are taken to be one hop, as when the server keeps up.
    `monitor` must be fresh (nothing pushed)."""
    sets: list[tuple[int, ...]] = []
    pushed = 0
    x = np.asarray(raw, dtype=np.float32)
    for end in np.asarray(ends, dtype=np.int64):
        sets.append(tuple(monitor.repair_channels))
        if end > pushed:
            monitor.push(x[pushed:end])
            pushed = int(end)
    return sets
