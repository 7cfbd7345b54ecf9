"""Bad-channel detection by neighbours: each channel is judged against its grid neighbours.

HD-EMG electrodes a few mm apart see largely the same muscle activity, so a channel can be
predicted from its neighbours; a channel that departs from that prediction is suspect even when its
own amplitude looks ordinary (Farago and Chan, Sensors 2023: neighbour prediction finds one bad
channel at 0 dB signal-to-disturbance with F1 99.1 %, an RMS threshold with 39.7 %).

One spectrum per channel of a short raw window `(n_samples, n_channels)` uV (mean removed, Hann
taper) gives every test, so the detector is one FFT plus gathers (pure numpy):

- `flat`: band power below `flat_ratio` of the neighbours' (or under `flat_floor_uv` RMS): a dead or
  constant input;
- `saturated`: the window's extreme value repeats on many samples: the input sits at a rail;
- `unpredictable`: the channel's EMG-band (20-450 Hz) power that a least-squares combination of its
  neighbours cannot explain is a large share of its power and far above the neighbours' own
  unexplained power (at rest every channel is mostly independent noise, so the share alone says
  little), or its band power is far above theirs:
  something adds to or replaces this channel's EMG (contact artifacts, pops, hum, a lifted electrode);
- `lowband`: 1-20 Hz power (where surface EMG has almost none) far above the neighbours' and a
  sizeable share of the channel's band power: motion, cable sway, baseline steps;
- `mains`: mains power (+-2 Hz of 50/60 Hz and harmonics) far above the neighbours' and a sizeable
  share of the channel's band power: a high-impedance contact;
- `bridged`: nearly identical to one neighbour, much more than the pairs of the same direction are
  elsewhere in the window (a gel bridge).

A detector told which frequencies the model's preprocessing notches (`removed_hz`) first projects
sinusoids at those frequencies (amplitude and phase drifting slowly over the window) out of every
channel, so it judges a channel by what reaches the model: mains hum that the notches remove is no
reason to rebuild a channel (the contact-quality report still shows it; `rohde.server.quality`).

References come from the neighbours not yet flagged (two passes), or from the whole array's good
channels when fewer than two neighbours are left, so a large patch is judged against healthy skin.
`ChannelQualityDetector` is shared by training, evaluation (`rohde data detector`) and the server's
live quality monitor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft

from rohde.core.errors import ConfigError
from rohde.core.layouts import NO_ELECTRODE, ElectrodeLayout

DETECTOR_FLAGS = ("flat", "saturated", "unpredictable", "lowband", "mains", "bridged")


@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds of the neighbour tests; chosen on simulated clean and disturbed data (`rohde data detector`)."""

    band_hz: tuple[float, float] = (20.0, 450.0)  # EMG band of the coherence and power tests
    low_band_hz: tuple[float, float] = (1.0, 20.0)  # band of slow artifacts
    mains_hz: tuple[float, ...] = (50.0, 60.0)  # mains fundamentals checked (harmonics included)
    flat_ratio: float = 0.02  # band power / neighbours' below which: flat
    flat_floor_uv: float = 0.1  # RMS (mean removed) below which a channel is flat whatever its neighbours
    saturated_share: float = 0.02  # share of samples at the window's extreme value above which: saturated
    unexplained: float = 0.3  # share of band power the neighbours cannot predict above which, and
    residual_ratio: float = 25.0  # that unpredicted power above this many times the neighbours': unpredictable
    power_ratio: float = 30.0  # band power above this many times the neighbours': unpredictable
    lowband_ratio: float = 40.0  # 1-20 Hz power above this many times the neighbours' and
    lowband_share: float = 0.1  # ... above this share of the channel's band power: lowband
    mains_ratio: float = 8.0  # mains power above this many times the neighbours' and
    mains_share: float = 0.3  # ... above this share of the channel's band power: mains
    bridge_factor: float = 0.025  # (1 - r) to one neighbour below this share of the same direction's median: bridged
    passes: int = 2  # re-judge with the flagged channels left out of every reference

    def __post_init__(self) -> None:
        if not 0 < self.band_hz[0] < self.band_hz[1]:
            raise ConfigError(f"DetectorConfig.band_hz must be (low, high) with 0 < low < high, got {self.band_hz}.")
        if self.passes < 1:
            raise ConfigError(f"DetectorConfig.passes must be >= 1, got {self.passes}.")


@dataclass(frozen=True)
class ChannelVerdict:
    """The detector's answer for one window."""

    flags: np.ndarray  # (n_channels, len(DETECTOR_FLAGS)) bool
    unexplained: np.ndarray  # (n_channels,) share of the EMG-band power the good neighbours cannot predict
    margins: np.ndarray  # (n_channels, len(DETECTOR_FLAGS)) each test's value over its threshold (> 1: fires)

    @property
    def bad(self) -> np.ndarray:
        """(n_channels,) bool: any flag set."""
        return np.asarray(self.flags.any(axis=1))

    @property
    def bad_channels(self) -> list[int]:
        return [int(c) for c in np.flatnonzero(self.bad)]

    def reasons(self, channel: int) -> tuple[str, ...]:
        return tuple(f for f, on in zip(DETECTOR_FLAGS, self.flags[channel], strict=True) if on)


_DIRECTIONS = tuple((dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0))


def neighbour_table(layout: ElectrodeLayout) -> np.ndarray:
    """(n_channels, 8) int: slot k holds the neighbour in direction `_DIRECTIONS[k]` of the grid, or -1.

    Wrapping axes (`ElectrodeGrid.wraps`) wrap; channels on no grid have no neighbours.
    """
    table = np.full((layout.n_channels, len(_DIRECTIONS)), -1, dtype=np.int64)
    for grid in layout.grids:
        index = grid.index_array()
        rows, cols = index.shape
        wraps = getattr(grid, "wraps", (False, False))
        for (r, c), ch in np.ndenumerate(index):
            if ch == NO_ELECTRODE:
                continue
            for k, (dr, dc) in enumerate(_DIRECTIONS):
                rr, cc = (r + dr) % rows if wraps[0] else r + dr, (c + dc) % cols if wraps[1] else c + dc
                if 0 <= rr < rows and 0 <= cc < cols and index[rr, cc] not in (NO_ELECTRODE, ch):
                    table[ch, k] = int(index[rr, cc])
    return table


class ChannelQualityDetector:
    """Judges every channel of raw `(n_samples, n_channels)` uV windows of one length against its neighbours."""

    def __init__(self, layout: ElectrodeLayout, fs_hz: float, n_samples: int, config: DetectorConfig | None = None,
                 removed_hz: Sequence[float] = ()) -> None:  # fmt: skip
        if fs_hz <= 0 or n_samples < 16:
            raise ConfigError(f"ChannelQualityDetector needs fs_hz > 0 and n_samples >= 16, got {fs_hz}, {n_samples}.")
        self.removed_hz = tuple(float(f) for f in removed_hz)
        self._removed_basis = _drifting_sinusoids(self.removed_hz, fs_hz, n_samples)
        self.config = config or DetectorConfig()
        self.layout = layout
        self.fs_hz = float(fs_hz)
        self.n_samples = int(n_samples)
        self.neighbours = neighbour_table(layout)
        self._has = self.neighbours >= 0  # (C, 8)
        self._nb = np.where(self._has, self.neighbours, 0)  # (C, 8), gather-safe
        self._mapped = np.zeros(layout.n_channels, dtype=bool)
        for grid in layout.grids:
            idx = grid.index_array()
            self._mapped[idx[idx != NO_ELECTRODE]] = True
        freqs = np.fft.rfftfreq(self.n_samples, 1.0 / self.fs_hz)
        c = self.config
        high = min(c.band_hz[1], 0.45 * self.fs_hz)
        self._band = (freqs >= c.band_hz[0]) & (freqs <= high)
        self._low = (freqs >= c.low_band_hz[0]) & (freqs < c.low_band_hz[1])
        mains = np.zeros_like(freqs, dtype=bool)
        for base in c.mains_hz:
            k = 1
            while k * base < self.fs_hz / 2:
                mains |= np.abs(freqs - k * base) <= 2.0
                k += 1
        self._mains_in_band = mains[self._band]
        self._taper = np.hanning(self.n_samples).astype(np.float32)[:, None]
        # Band RMS from the tapered spectrum (Parseval).
        self._power_scale = 2.0 / (self.n_samples * float(np.sum(self._taper.astype(np.float64) ** 2)))

    def detect(self, raw: np.ndarray) -> ChannelVerdict:
        """Flags for one raw window `(n_samples, n_channels)` uV (finite values)."""
        if raw.shape != (self.n_samples, self.layout.n_channels):
            raise ConfigError(
                f"The detector expects windows of shape ({self.n_samples}, {self.layout.n_channels}), got {raw.shape}."
            )
        c = self.config
        x = raw.astype(np.float32, copy=False)
        centred = x - x.mean(axis=0)
        if self._removed_basis is not None:  # what the notches take out never reaches the model
            basis = self._removed_basis
            centred -= basis @ (basis.T @ centred)
        spectrum = sp_fft.rfft(centred * self._taper, axis=0)  # (F, C) complex64
        band = spectrum[self._band]  # (Fb, C)
        band_power = band.real**2 + band.imag**2  # (Fb, C)
        power = band_power.sum(axis=0, dtype=np.float64) + 1e-12  # (C,)
        low = spectrum[self._low]
        low_power = (low.real**2 + low.imag**2).sum(axis=0, dtype=np.float64) + 1e-12
        low_share = low_power / power
        mains_power = band_power[self._mains_in_band].sum(axis=0, dtype=np.float64) + 1e-12
        mains_share = mains_power / power
        rms = centred.std(axis=0)
        # Band-limited inner products between each channel and its neighbours (Parseval, real part).
        # As real vectors (real and imaginary parts stacked) the inner products are plain batched matmuls.
        vec = np.concatenate([band.real, band.imag], axis=0)  # (2 Fb, C)
        inner = (vec.T @ vec).astype(np.float64)  # (C, C): one BLAS call, then gathers
        cross = inner[np.arange(len(inner))[:, None], self._nb]  # (C, 8) <neighbour, channel>
        gram = inner[self._nb[:, :, None], self._nb[:, None, :]]  # (C, 8, 8) <neighbour, neighbour>
        nb_power = power[self._nb]  # (C, 8)
        pair_r = np.where(self._has, cross / np.sqrt(power[:, None] * nb_power), np.nan)

        n_ch = self.layout.n_channels
        hard = np.zeros((n_ch, 2))  # margins of the tests that need no neighbour: flat floor, saturation
        hard[:, 0] = c.flat_floor_uv / np.maximum(rms, 1e-9)
        hard[:, 1] = self._saturation_margin(x)
        margins = np.zeros((n_ch, len(DETECTOR_FLAGS)))
        margins[:, :2] = hard
        unexplained = np.ones(n_ch)
        for _ in range(c.passes):
            good = self._mapped & ~(margins > 1).any(axis=1)
            use = self._has & good[self._nb]  # (C, 8) neighbours that may predict
            enough = use.sum(axis=1) >= 2
            unexplained = self._unexplained(gram, cross, power, nb_power, np.where(enough[:, None], use, self._has))
            ratio = power / self._reference(power, use, good, enough)
            residual = unexplained * power  # what the neighbours cannot predict, in band power
            residual_ratio = residual / self._reference(residual, use, good, enough)
            low_ratio = low_power / self._reference(low_power, use, good, enough)
            mains_ratio = mains_power / self._reference(mains_power, use, good, enough)
            # Bridged: a pair far more alike than the pairs of the same direction elsewhere in this window.
            apart = 1.0 - pair_r
            pairs = good[:, None] & use  # (C, 8)
            typical = _row_median(np.where(pairs, apart, np.inf).T, pairs.sum(axis=0))  # (8,) per direction
            bridge = np.where(self._has, c.bridge_factor * typical[None, :] / np.maximum(apart, 1e-9), 0.0).max(axis=1)
            # Each margin passes 1 where its test fires; a test of two conditions takes the smaller.
            margins = np.zeros((n_ch, len(DETECTOR_FLAGS)))
            margins[:, 0] = np.maximum(hard[:, 0], c.flat_ratio / np.maximum(ratio, 1e-12))
            margins[:, 1] = hard[:, 1]
            margins[:, 2] = np.maximum(
                np.minimum(residual_ratio / c.residual_ratio, unexplained / c.unexplained), ratio / c.power_ratio
            )
            margins[:, 3] = np.minimum(low_ratio / c.lowband_ratio, low_share / c.lowband_share)
            margins[:, 4] = np.minimum(mains_ratio / c.mains_ratio, mains_share / c.mains_share)
            margins[:, 5] = np.nan_to_num(bridge, nan=0.0, posinf=0.0)
            flat = margins[:, 0] > 1
            margins[flat, 2:] = np.minimum(margins[flat, 2:], 1.0)  # a flat channel is flat, nothing else
            margins[~self._mapped] = 0.0
        return ChannelVerdict(flags=margins > 1, unexplained=unexplained, margins=margins)

    def _unexplained(
        self, gram: np.ndarray, cross: np.ndarray, power: np.ndarray, nb_power: np.ndarray, use: np.ndarray
    ) -> np.ndarray:
        """(C,) share of each channel's band power its usable neighbours cannot predict (least squares)."""
        mask = use.astype(np.float64)
        g = gram * mask[:, :, None] * mask[:, None, :]
        # Ridge of 1 % of each neighbour's power keeps the solve stable; unused slots get a unit diagonal.
        diag = np.where(use, 0.01 * nb_power, 1.0)
        g[:, np.arange(8), np.arange(8)] += diag
        b = cross * mask
        w = np.linalg.solve(g, b[:, :, None])[:, :, 0]
        explained = np.einsum("ck,ck->c", w, b)
        return np.asarray(np.clip(1.0 - explained / power, 0.0, 1.0))

    def _saturation_margin(self, x: np.ndarray) -> np.ndarray:
        """(C,) share of samples held at the window's maximum or minimum in runs of 4+, over `saturated_share`."""
        c = self.config
        high, low = x.max(axis=0), x.min(axis=0)
        tol = 1e-6 * (np.abs(high) + np.abs(low) + 1.0)
        share = np.zeros(x.shape[1])
        for at in (x >= high - tol, x <= low + tol):  # (n, C)
            runs = at[3:] & at[2:-1] & at[1:-2] & at[:-3]
            share = np.maximum(share, runs.mean(axis=0))
        return np.where(high - low > 10 * c.flat_floor_uv, share / c.saturated_share, 0.0)

    def _reference(self, value: np.ndarray, use: np.ndarray, good: np.ndarray, enough: np.ndarray) -> np.ndarray:
        """(C,) median of `value` over each channel's good neighbours, or over all good channels when too few."""
        local = _row_median(np.where(use, value[self._nb], np.inf), use.sum(axis=1))
        overall = float(np.median(value[good])) if good.any() else float(np.median(value))
        return np.where(enough, local, overall) + 1e-12


def _drifting_sinusoids(freqs_hz: tuple[float, ...], fs_hz: float, n_samples: int) -> np.ndarray | None:
    """(n_samples, 6 k) orthonormal float32 basis of cosines and sines at `freqs_hz`, each also times a
    linear and a quadratic ramp over the window: a hum whose amplitude or phase drifts (mains wanders a few
    tenths of a Hz) lies in it. None when there is nothing to remove.

    Measured on 250 ms at 2048 Hz with the default notches (10 frequencies): 1150 uV RMS of hum (five
    harmonics) leaves 7 uV at 50.0 Hz and 9 uV at 50.3 Hz, at the cost of 12 % of white noise's power (60 of
    512 dimensions).
    """
    usable = [f for f in freqs_hz if 0 < f < fs_hz / 2]
    if not usable:
        return None
    if 6 * len(usable) > n_samples // 2:
        raise ConfigError(f"A window of {n_samples} samples is too short to remove {len(usable)} frequencies.")
    seconds = np.arange(n_samples) / fs_hz
    ramp = (np.arange(n_samples) - n_samples / 2) / n_samples
    columns = [wave(2 * np.pi * f * seconds) * ramp**p for f in usable for p in range(3) for wave in (np.cos, np.sin)]
    basis, _ = np.linalg.qr(np.stack(columns, axis=1))
    return np.ascontiguousarray(basis, dtype=np.float32)


def _row_median(values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """(R,) median of the first `count[r]` smallest entries of each row (the rest padded with +inf)."""
    ordered = np.sort(values, axis=1)
    k = np.maximum(count, 1)
    lo = np.take_along_axis(ordered, ((k - 1) // 2)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(ordered, (k // 2)[:, None], axis=1)[:, 0]
    return np.where(count > 0, 0.5 * (lo + hi), 0.0)
