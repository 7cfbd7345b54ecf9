"""Bad-channel detection by neighbours: each channel is judged against its grid neighbours.

HD-EMG electrodes a few mm apart see largely the same muscle activity, so a channel can be
predicted from its neighbours; a channel that departs from that prediction is suspect even when its
own amplitude looks ordinary (Farago and Chan, Sensors 2023: neighbour prediction finds one bad
channel at 0 dB signal-to-disturbance with F1 99.1 %, an RMS threshold with 39.7 %).

One spectrum per channel of a short raw window `(n_samples, n_channels)` uV (mean removed, Hann
taper) and its first differences give every test, so the detector is one FFT, one least-squares
solve per channel and a few matrix products (pure numpy):

- `flat`: band power below `flat_ratio` of the neighbours' (over the window, or in half of its
  `flat_blocks` sub-blocks), or under `flat_floor_uv` RMS: a dead, constant or dropped-out input;
- `saturated`: the window's extreme value repeats on many samples: the input sits at a rail;
- `unpredictable`: the channel's EMG-band (20-450 Hz) power that a least-squares combination of its
  neighbours cannot explain is a large share of its power and far above the neighbours' own
  unexplained power (at rest every channel is mostly independent noise, so the share alone says
  little), or its band power is far above theirs:
  something adds to or replaces this channel's EMG (contact artifacts, pops, hum, a lifted electrode);
- `lowband`: 1-20 Hz power (where surface EMG has almost none) far above the neighbours' and a
  sizeable share of the channel's band power: motion, cable sway, baseline steps; or far above the
  array's quietest quarter and a large share: a patch wider than a neighbourhood sways or wanders as one,
  so inside it every neighbour looks alike (the whole array is the reference its neighbours cannot be);
- `mains`: mains power (+-2 Hz of 50/60 Hz and harmonics) far above the neighbours' and a sizeable
  share of the channel's band power, or mains power the neighbours cannot predict far above what
  they leave unpredicted there: a high-impedance contact, even when its hum is weaker than the EMG;
- `bridged`: nearly identical to one neighbour, much more than the neighbouring pairs of the same
  direction are (a gel bridge);
- `transient`: the first differences the neighbours cannot predict (the same least-squares weights,
  in the time domain) hold a spike far above their own RMS and the neighbours' (a pop, a tap, a
  baseline step), or carry far more power than the neighbours' (bursts of cable crackle). A step
  or burst on one electrode is a spike there, while shared activity and slow drifts cancel or vanish.

A detector told which frequencies the model's preprocessing notches (`removed_hz`) first projects
sinusoids at those frequencies (amplitude and phase drifting slowly over the window) out of every
channel, so it judges a channel by what reaches the model: mains hum that the notches remove is no
reason to rebuild a channel (the contact-quality report still shows it; `rohde.core.quality_monitor`).

References come from the neighbours not yet flagged (two passes), or from the whole array's good
channels when fewer than two neighbours are left, so a large patch is judged against healthy skin.
A channel flagged only by a prediction test (`unpredictable`, `mains` by prediction, `transient`)
next to a channel that fails such a test worse stays a predictor in the second pass (it may only
have been predicted from that channel), and the prediction tests must fail with every neighbour as a
predictor as well as with the good ones, and a prediction flag next to one `EXPLAINED_BY` times
stronger is put down to that neighbour: a channel that loses its best predictor to a flag is not bad
for that. A second pass runs only when the first flags something. `ChannelQualityDetector` is shared
by training, evaluation (`rohde data detector`) and the server's live quality monitor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft

from rohde.core.errors import ConfigError
from rohde.core.layouts import NO_ELECTRODE, ElectrodeLayout

DETECTOR_FLAGS = ("flat", "saturated", "unpredictable", "lowband", "mains", "bridged", "transient")
_PREDICTED = [2, 4, 6]  # flags of the prediction tests (unpredictable, mains, transient)
_OTHER = [0, 1, 3, 5]
EXPLAINED_BY = 5.0  # a prediction flag next to one this many times stronger is that neighbour's, not the channel's


@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds of the neighbour tests; chosen on simulated and real validation recordings (`rohde data detector`)."""

    band_hz: tuple[float, float] = (20.0, 450.0)  # EMG band of the coherence and power tests
    low_band_hz: tuple[float, float] = (1.0, 20.0)  # band of slow artifacts
    mains_hz: tuple[float, ...] = (50.0, 60.0)  # mains fundamentals checked (harmonics included)
    flat_ratio: float = 0.01  # band power / neighbours' below which (over the window or most sub-blocks): flat
    flat_floor_uv: float = 0.1  # RMS (mean removed) below which a channel is flat whatever its neighbours
    flat_blocks: int = 8  # sub-blocks of the flat test: flat in half of them is flat
    saturated_share: float = 0.02  # share of samples at the window's extreme value above which: saturated
    unexplained: float = 0.1  # share of band power the neighbours cannot predict above which, and
    residual_ratio: float = 35.0  # that unpredicted power above this many times the neighbours': unpredictable
    power_ratio: float = 50.0  # band power above this many times the neighbours': unpredictable
    lowband_ratio: float = 80.0  # 1-20 Hz power above this many times the neighbours' and
    lowband_share: float = 0.1  # ... above this share of the channel's band power: lowband
    # ... or 1-20 Hz power above this many times the array's quiet channels' (the `array_quantile` of the channels
    # with a signal): a patch of lifted or swaying electrodes wider than a neighbourhood looks ordinary to its
    # own neighbours, not to the rest of the array. 0: off.
    array_lowband_ratio: float = 150.0
    array_lowband_share: float = 0.3  # ... and above this share of the channel's band power (EMG has little there)
    array_quantile: float = 0.25  # the array's reference: a quarter of its channels are quieter
    mains_ratio: float = 8.0  # mains power above this many times the neighbours' and
    mains_share: float = 0.3  # ... above this share of the channel's band power: mains; or
    mains_residual_ratio: float = 50.0  # unpredicted mains power above this many times the neighbours' and
    mains_residual_share: float = 0.1  # ... above this share of the channel's band power: mains
    bridge_factor: float = 0.03  # (1 - r) to one neighbour below this share of the neighbouring pairs': bridged
    transient_peak: float = 8.0  # peak of the unpredicted first differences above this many times their RMS and
    transient_ratio: float = 6.0  # ... above this many times the neighbours' RMS of them: transient; or
    burst_ratio: float = 5.0  # RMS of the unpredicted first differences above this many times the neighbours'
    passes: int = 2  # re-judge with the flagged channels left out of every reference

    def __post_init__(self) -> None:
        if not 0 < self.band_hz[0] < self.band_hz[1]:
            raise ConfigError(f"DetectorConfig.band_hz must be (low, high) with 0 < low < high, got {self.band_hz}.")
        if self.passes < 1:
            raise ConfigError(f"DetectorConfig.passes must be >= 1, got {self.passes}.")
        if self.array_lowband_ratio < 0 or not 0 < self.array_quantile < 1:
            raise ConfigError("DetectorConfig.array_lowband_ratio must be >= 0 and array_quantile in (0, 1), got "
                              f"{self.array_lowband_ratio} and {self.array_quantile}.")  # fmt: skip
        if self.flat_blocks < 2:
            raise ConfigError(f"DetectorConfig.flat_blocks must be >= 2, got {self.flat_blocks}.")


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


def with_enclosed(bad: np.ndarray, neighbours: np.ndarray, passes: int = 2) -> np.ndarray:
    """(C,) `bad` plus every channel with more than half of a full neighbourhood (5 of 8) bad (`neighbours`: the
    `neighbour_table`), `passes` times: disturbances come in patches, and a channel the tests missed inside one
    would feed its fault into the rebuild of every bad neighbour. The straight edge of a patch does not grow, not
    even along the border of the grid (where a channel has 5 neighbours, 3 of them in the patch)."""
    has = neighbours >= 0
    nb = np.where(has, neighbours, 0)
    out = np.asarray(bad, dtype=bool).copy()
    for _ in range(passes):
        added = ~out & ((out[nb] & has).sum(axis=1) >= 5)
        if not added.any():
            break
        out |= added
    return out


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
        n_ch = layout.n_channels
        self._mapped = np.zeros(n_ch, dtype=bool)
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
        self._mains_rows = np.concatenate([self._mains_in_band, self._mains_in_band])  # of the stacked (re, im) band
        self._taper = np.hanning(self.n_samples).astype(np.float32)[:, None]
        # Band RMS from the tapered spectrum (Parseval).
        self._power_scale = 2.0 / (self.n_samples * float(np.sum(self._taper.astype(np.float64) ** 2)))
        self._block = max(1, (self.n_samples - 1) // c.flat_blocks)
        self._n_blocks = (self.n_samples - 1) // self._block
        # The time-domain prediction is one (C, C) product: identity minus each channel's neighbour weights,
        # written at the flat positions of (channel, neighbour) (a wrapping axis may name a neighbour twice).
        self._predicted_cols = np.isin(np.arange(len(DETECTOR_FLAGS)), _PREDICTED)[None, :]
        self._eye = np.eye(n_ch, dtype=np.float32)
        self._slots = np.arange(n_ch)[:, None] * n_ch + self._nb  # (C, 8)
        # Neighbours never cross grids: the product splits into one block per grid (a slice when contiguous).
        self._groups: list[slice | np.ndarray] = []
        for grid in layout.grids:
            idx = np.sort(grid.index_array()[grid.index_array() != NO_ELECTRODE])
            contiguous = idx.size and idx[-1] - idx[0] + 1 == idx.size
            self._groups.append(slice(int(idx[0]), int(idx[-1]) + 1) if contiguous else idx)
        self._unique_slots = all(
            len(set(row[has])) == int(has.sum()) for row, has in zip(self.neighbours, self._has, strict=True)
        )

    def detect(self, raw: np.ndarray) -> ChannelVerdict:
        """Flags for one raw window `(n_samples, n_channels)` uV (finite values)."""
        return self._judge(raw)[0]

    def _judge(self, raw: np.ndarray, keep: bool = False) -> tuple[ChannelVerdict, dict[str, np.ndarray]]:
        """The verdict, and with `keep` each test's statistics (for threshold studies)."""
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
        rms = np.sqrt(np.einsum("tc,tc->c", centred, centred) / self.n_samples)
        array_low = np.zeros(self.layout.n_channels)
        if c.array_lowband_ratio > 0:  # the quiet quarter of the channels with a signal (dead ones are quieter)
            live = self._mapped & (rms >= c.flat_floor_uv)
            quiet = np.quantile(low_power[live if live.any() else self._mapped], c.array_quantile)
            array_low = np.minimum(low_power / (quiet * c.array_lowband_ratio), low_share / c.array_lowband_share)
        # First differences: a step or a burst is a spike here, where slow drifts all but vanish.
        step = np.diff(centred, axis=0)  # (n - 1, C)
        # Band-limited inner products between each channel and its neighbours (Parseval, real part).
        # As real vectors (real and imaginary parts stacked) the inner products are plain batched matmuls.
        vec = np.concatenate([band.real, band.imag], axis=0)  # (2 Fb, C)
        step_and_mains = np.concatenate([step, vec[self._mains_rows]], axis=0)  # both predicted in one product
        inner = (vec.T @ vec).astype(np.float64)  # (C, C): one BLAS call, then gathers
        cross = inner[np.arange(len(inner))[:, None], self._nb]  # (C, 8) <neighbour, channel>
        gram = inner[self._nb[:, :, None], self._nb[:, None, :]]  # (C, 8, 8) <neighbour, neighbour>
        nb_power = power[self._nb]  # (C, 8)
        apart = np.where(self._has, 1.0 - cross / np.sqrt(power[:, None] * nb_power), np.nan)  # 1 - r per pair

        n_ch = self.layout.n_channels
        hard = np.zeros((n_ch, 2))  # margins of the tests that need no neighbour: flat floor, saturation
        hard[:, 0] = c.flat_floor_uv / np.maximum(rms, 1e-9)
        hard[:, 1] = self._saturation_margin(x)
        margins = np.zeros((n_ch, len(DETECTOR_FLAGS)))
        margins[:, :2] = hard
        unexplained = np.ones(n_ch)
        lowest = np.full((n_ch, 3), np.inf)  # the prediction tests' margins, smallest over the passes
        stats: dict[str, np.ndarray] = {}
        good = np.zeros(n_ch, dtype=bool)
        for pass_no in range(c.passes):
            previous, good = good, self._predictors(margins, pass_no)
            if pass_no > 0 and np.array_equal(good, previous):
                break  # the same predictors and references: the same verdict
            use = self._has & good[self._nb]  # (C, 8) neighbours that may predict
            enough = use.sum(axis=1) >= 2
            predictors = np.where(enough[:, None], use, self._has)
            weights = self._weights(gram, cross, nb_power, predictors)  # (C, 8), zero where not used
            unexplained = np.clip(1.0 - np.einsum("ck,ck->c", weights, cross) / power, 0.0, 1.0)
            residual = unexplained * power  # what the neighbours cannot predict, in band power
            # The same prediction in the time domain (first differences) and at the mains bins.
            mix = self._eye.copy()
            if self._unique_slots:
                mix.flat[self._slots[predictors]] = -weights[predictors]
            else:
                np.subtract.at(mix.reshape(-1), self._slots[predictors], weights[predictors])
            res = self._predict(step_and_mains, mix)
            res_step, res_mains = res[: len(step)], res[len(step) :]  # (n - 1, C), (2 Fm, C)
            res_rms = np.sqrt(np.einsum("tc,tc->c", res_step, res_step) / len(res_step)) + 1e-9
            res_peak = np.maximum(res_step.max(axis=0), -res_step.min(axis=0))
            mains_residual = np.einsum("fc,fc->c", res_mains, res_mains).astype(np.float64) + 1e-12
            values = np.stack([power, residual, low_power, mains_power, mains_residual, res_rms], axis=1)
            ratio, residual_ratio, low_ratio, mains_ratio, mains_residual_ratio, res_rms_ratio = (
                values / self._references(values, use, good, enough)
            ).T
            peak_factor = res_peak / res_rms
            peak_ratio = peak_factor * res_rms_ratio  # peak over the neighbours' RMS
            mains_residual_share = mains_residual / power
            mains_margin = np.minimum(mains_residual_ratio / c.mains_residual_ratio,
                                      mains_residual_share / c.mains_residual_share)  # fmt: skip
            spike = np.minimum(peak_factor / c.transient_peak, peak_ratio / c.transient_ratio)
            predicted = np.stack([
                np.minimum(residual_ratio / c.residual_ratio, unexplained / c.unexplained),
                mains_margin,
                np.maximum(spike, res_rms_ratio / c.burst_ratio),
            ], axis=1)  # fmt: skip
            lowest = np.minimum(lowest, predicted)
            flat_ratio = np.minimum(ratio, self._block_ratio(step, ratio, use, good, enough))
            margins = np.zeros((n_ch, len(DETECTOR_FLAGS)))
            margins[:, 0] = np.maximum(hard[:, 0], c.flat_ratio / np.maximum(flat_ratio, 1e-12))
            margins[:, 1] = hard[:, 1]
            margins[:, 2] = np.maximum(lowest[:, 0], ratio / c.power_ratio)
            margins[:, 3] = np.maximum(np.minimum(low_ratio / c.lowband_ratio, low_share / c.lowband_share), array_low)
            margins[:, 4] = np.maximum(
                np.minimum(mains_ratio / c.mains_ratio, mains_share / c.mains_share), lowest[:, 1]
            )
            bridge = self._bridge_margin(apart, good[:, None] & use)
            margins[:, 5] = bridge
            margins[:, 6] = lowest[:, 2]
            flat = margins[:, 0] > 1
            margins[flat, 2:] = np.minimum(margins[flat, 2:], 1.0)  # a flat channel is flat, nothing else
            explained = self._explained(margins)
            margins[explained[:, None] & self._predicted_cols] = np.minimum(
                margins[explained][:, _PREDICTED], 1.0
            ).ravel()
            margins[~self._mapped] = 0.0
            if keep:
                per_pass = {
                    "residual_ratio": residual_ratio,
                    "unexplained": unexplained,
                    "mains_residual_ratio": mains_residual_ratio,
                    "mains_residual_share": mains_residual_share,
                    "peak_factor": peak_factor,
                    "peak_ratio": peak_ratio,
                    "res_rms_ratio": res_rms_ratio,
                }
                stats.update({f"{k}_{pass_no}": v for k, v in per_pass.items()})
                stats.update({"ratio": ratio, "low_ratio": low_ratio, "low_share": low_share,
                              "mains_ratio": mains_ratio, "mains_share": mains_share, "flat_ratio": flat_ratio,
                              "bridge": bridge / c.bridge_factor, "hard0": hard[:, 0],
                              "hard1": hard[:, 1]})  # fmt: skip
        if keep:  # a pass skipped as unchanged repeats the one before
            for k in [k for k in stats if k.endswith("_0")]:
                for p in range(1, c.passes):
                    stats.setdefault(f"{k[:-2]}_{p}", stats[f"{k[:-2]}_{p - 1}"])
        return ChannelVerdict(flags=margins > 1, unexplained=unexplained, margins=margins), stats

    def _predict(self, signal: np.ndarray, mix: np.ndarray) -> np.ndarray:
        """`signal` (t, C) minus each channel's weighted neighbours: `signal @ mix.T`, one product per grid."""
        out = np.zeros_like(signal)
        for g in self._groups:
            if isinstance(g, slice):
                out[:, g] = signal[:, g] @ mix[g, g].T
            else:
                out[:, g] = signal[:, g] @ mix[np.ix_(g, g)].T
        return out

    def _explained(self, margins: np.ndarray) -> np.ndarray:
        """(C,) channels flagged only by prediction tests next to one that fails them `EXPLAINED_BY` times worse:
        they are judged to have lost that neighbour as a predictor, not to be bad themselves."""
        flagged = margins > 1
        only = flagged[:, _PREDICTED].any(axis=1) & ~flagged[:, _OTHER].any(axis=1)
        score = _prediction_score(margins)
        worst = np.where(self._has, score[self._nb], 0.0).max(axis=1)
        return only & (worst > EXPLAINED_BY * score)

    def _predictors(self, margins: np.ndarray, pass_no: int) -> np.ndarray:
        """(C,) channels that may predict and serve as references in this pass.

        A channel flagged only by a prediction test next to one that fails such a test worse may just have been
        predicted from that one: it stays a predictor."""
        flagged = margins > 1
        good = self._mapped & ~flagged.any(axis=1)
        if pass_no == 0:
            return good
        score = _prediction_score(margins)
        worse = (np.where(self._has, score[self._nb], 0.0) > score[:, None]).any(axis=1)
        return good | (self._mapped & ~flagged[:, _OTHER].any(axis=1) & worse)

    def _weights(self, gram: np.ndarray, cross: np.ndarray, nb_power: np.ndarray, use: np.ndarray) -> np.ndarray:
        """(C, 8) least-squares weights of each channel's usable neighbours in the EMG band (zero elsewhere)."""
        mask = use.astype(np.float64)
        g = gram * mask[:, :, None] * mask[:, None, :]
        # Ridge of 1 % of each neighbour's power keeps the solve stable; unused slots get a unit diagonal.
        diag = np.where(use, 0.01 * nb_power, 1.0)
        g[:, np.arange(8), np.arange(8)] += diag
        b = cross * mask
        return np.asarray(np.linalg.solve(g, b[:, :, None])[:, :, 0] * mask, dtype=np.float32)

    def _references(self, values: np.ndarray, use: np.ndarray, good: np.ndarray, enough: np.ndarray) -> np.ndarray:
        """(C, m) median of each column of `values` (C, m) over each channel's good neighbours, or over all good
        channels when too few (one sort for every column)."""
        gathered = np.where(use[:, :, None], values[self._nb], np.inf)  # (C, 8, m)
        gathered.sort(axis=1)
        k = np.maximum(use.sum(axis=1), 1)[:, None, None]
        local = 0.5 * (
            np.take_along_axis(gathered, (k - 1) // 2, axis=1) + np.take_along_axis(gathered, k // 2, axis=1)
        )
        overall = np.median(values[good] if good.any() else values, axis=0)
        return np.where(enough[:, None], local[:, 0], overall[None, :]) + 1e-12

    def _block_ratio(
        self, step: np.ndarray, ratio: np.ndarray, use: np.ndarray, good: np.ndarray, enough: np.ndarray
    ) -> np.ndarray:
        """(C,) the first-difference energy against the neighbours' in the same block, the `flat_blocks // 2`-th
        smallest over the sub-blocks: small when the channel is flat for half of the window or more. Only channels
        that lost at least half of their band power against the neighbours are examined (such a dropout does)."""
        out = np.full(len(ratio), np.inf)
        suspect = np.flatnonzero(ratio < 0.5)
        if not suspect.size:
            return out
        blocks = step[: self._n_blocks * self._block].reshape(self._n_blocks, self._block, -1)
        energy = np.einsum("btc,btc->cb", blocks, blocks).astype(np.float64) + 1e-12  # (C, B)
        refs = self._references(energy, use, good, enough)  # (C, B)
        half = self._n_blocks // 2  # flat in half of the blocks: the half-th smallest ratio is small
        out[suspect] = np.partition(energy[suspect] / refs[suspect], half - 1, axis=1)[:, half - 1]
        return out

    def _bridge_margin(self, apart: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """(C,) the largest `bridge_factor * (1 - r) of the neighbouring pairs of that direction / (1 - r)` over the
        channel's neighbours: the neighbouring pairs are those that start at the channel's good neighbours (the
        median over them); with fewer than two, the median of that direction over the whole window."""
        typical = _row_median(np.where(pairs, apart, np.inf).T, pairs.sum(axis=0))  # (8,) per direction
        factor = self.config.bridge_factor
        # No reference exceeds the largest (1 - r) of its direction: only pairs below that share can fire.
        largest = np.maximum(np.nanmax(np.where(pairs, apart, -np.inf), axis=0), typical)  # (8,)
        suspect = np.flatnonzero((self._has & (apart < factor * largest[None, :])).any(axis=1))
        out = np.zeros(len(apart))
        if not suspect.size:
            return out
        nb, has, apart_s = self._nb[suspect], self._has[suspect], apart[suspect]
        valid = has[:, :, None] & pairs[nb]  # (S, 8 neighbours j, 8 directions k)
        around = np.where(valid, apart[nb], np.inf)
        around.sort(axis=1)
        count = valid.sum(axis=1)  # (C, 8)
        k = np.maximum(count, 1)[:, None, :]
        local = 0.5 * (np.take_along_axis(around, (k - 1) // 2, axis=1) + np.take_along_axis(around, k // 2, axis=1))
        reference = np.where(count >= 2, local[:, 0], typical[None, :])
        margin = np.where(has, factor * reference / np.maximum(apart_s, 1e-9), 0.0)
        out[suspect] = np.nan_to_num(margin.max(axis=1), nan=0.0, posinf=0.0)
        return out

    def _saturation_margin(self, x: np.ndarray) -> np.ndarray:
        """(C,) share of samples held at the window's maximum or minimum in runs of 4+, over `saturated_share`."""
        c = self.config
        high, low = x.max(axis=0), x.min(axis=0)
        tol = 1e-6 * (np.abs(high) + np.abs(low) + 1.0)
        share = np.zeros(x.shape[1])
        need = c.saturated_share * (x.shape[0] - 3)  # fewer samples at an extreme cannot fill that many runs
        for at in (x >= high - tol, x <= low + tol):  # (n, C)
            cand = np.flatnonzero(at.sum(axis=0) > need)
            if cand.size:
                a = at[:, cand]
                runs = a[3:] & a[2:-1] & a[1:-2] & a[:-3]
                share[cand] = np.maximum(share[cand], runs.mean(axis=0))
        return np.where(high - low > 10 * c.flat_floor_uv, share / c.saturated_share, 0.0)


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


def _prediction_score(margins: np.ndarray) -> np.ndarray:
    """(C,) the largest prediction-test margin of each channel that one of them flags, else 0."""
    predicted = margins[:, _PREDICTED]
    return np.where((predicted > 1).any(axis=1), predicted.max(axis=1), 0.0)
