"""Causal, stateful preprocessing shared by training and serving.

Band-pass (Butterworth) and power-line notches as second-order sections, keeping the filter state
between calls. Filtering a recording in one call or chunk by chunk therefore gives the same samples (up
to float32 rounding of the output): training filters whole recordings with `StreamFilter`, the server
filters each pulled chunk with the very same class.

The cascade runs a block of samples at a time as matrix products (`_BlockSystem`), not sample by sample:
the sections are one linear system, so a block's output is its impulse-response (Toeplitz) matrix times
the block plus the decay of the state it started from, and the state it ends in is the same kind of
product. In float64 this gives `scipy.signal.sosfilt`'s numbers within float32 rounding of the output, in
about a third of its time for a 50 ms hop of 192 channels: the products run over all channels at once where
the section recursion runs channel by channel and sample by sample.

Notches: by default both mains families (50 and 60 Hz: hum of either reaches an electrode of high
contact impedance, from the grid or from equipment of the other standard) and their harmonics up to
the 5th (250 and 300 Hz), each notch a constant 5 Hz wide (-3 dB), so a harmonic's notch is as wide in
Hz as the fundamental's, not h times wider. Measured on the simulator's hum (`HumParams`: harmonics up
to the 5th, 0.02 Hz mains wander) on 30 % of the electrodes at a 3000 uV fundamental (2380 uV RMS):
the design of older packages (50 Hz, its 2nd and 3rd harmonic, Q 30) left 285 uV RMS of 50 Hz hum (its
4th and 5th harmonic, which it does not notch) and 2368 uV of 60 Hz hum (none of it notched); this one
leaves 29 uV of either (-38 dB), at 1.3 dB of EMG power (0.3 before). The width was chosen on validation
accuracy (a clean-trained CNN on the validation trial with 50 or 60 Hz hum, widths 2, 3, 5 and 8 Hz: 5 and 8
equal within the spread of two seeds, 5 kept for its higher clean accuracy). Harmonics above the 5th
(weaker in mains hum, and absent from the simulator) are not notched: every notch is one more section
per sample and channel, and 10 notches keep the server's per-window cost within a fifth of what it was.
Packages store their configuration; one written before a field existed loads with that field's old
meaning (`PreprocessingConfig.from_dict`, `LEGACY_DEFAULTS`).

Arrays are `(n_samples, n_channels)`, as LSL delivers them and as recordings are stored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache, cached_property
from typing import Any

import numpy as np
from scipy import signal

from rohde.core.errors import ConfigError

# Samples per matrix product. A block of n costs about n/2 + 2 * n_state multiply-adds per sample and channel;
# 128 holds one 50 ms hop at 2048 Hz in one product.
BLOCK_SAMPLES = 128


@dataclass(frozen=True)
class PreprocessingConfig:
    """What the filter chain does; stored in every model package."""

    fs_hz: float  # sampling rate of the stream
    bandpass_hz: tuple[float, float] = (20.0, 450.0)  # surface-EMG band; upper edge capped below Nyquist
    bandpass_order: int = 4  # Butterworth order of each of the high-pass and low-pass halves
    notch_hz: float | None = 50.0  # local power-line fundamental (50 or 60), None for no notch at all
    notch_other_mains: bool = True  # also notch the other family (60 Hz beside 50 and back); False: only notch_hz
    notch_harmonics: int = 5  # per family, orders 1..notch_harmonics (below 0.98 Nyquist)
    notch_q: float = 30.0  # quality factor of each notch (width f / Q) when notch_width_hz is None
    notch_width_hz: float | None = 5.0  # -3 dB width of every notch in Hz; None: f / notch_q

    def __post_init__(self) -> None:
        if self.fs_hz <= 0:
            raise ConfigError(f"fs_hz must be positive, got {self.fs_hz}.")
        low, high = self.bandpass_hz
        if not 0 < low < high:
            raise ConfigError(f"bandpass_hz must be (low, high) with 0 < low < high, got {self.bandpass_hz}.")
        if self.notch_hz is not None and self.notch_hz not in (50.0, 60.0):
            raise ConfigError(f"notch_hz must be 50, 60 or None, got {self.notch_hz}.")
        if self.notch_harmonics < 1:
            raise ConfigError(f"notch_harmonics must be >= 1, got {self.notch_harmonics}.")
        if self.notch_q <= 0:
            raise ConfigError(f"notch_q must be positive, got {self.notch_q}.")
        if self.notch_width_hz is not None and not 0 < self.notch_width_hz < 20:
            raise ConfigError(
                f"notch_width_hz must be in (0, 20) Hz or None (width f / notch_q), got {self.notch_width_hz}."
            )

    @property
    def effective_band_hz(self) -> tuple[float, float]:
        """The band really applied: the upper edge scaled down to 0.45 fs where fs is low."""
        low, high = self.bandpass_hz
        return low, min(high, 0.45 * self.fs_hz)

    @property
    def mains_families_hz(self) -> tuple[float, ...]:
        """The fundamentals notched: none, `notch_hz`, or both 50 and 60 Hz (local mains first)."""
        if self.notch_hz is None:
            return ()
        if not self.notch_other_mains:
            return (self.notch_hz,)
        return (self.notch_hz, 110.0 - self.notch_hz)

    def notch_frequencies(self) -> list[float]:
        """Sorted notch centres in Hz: each family's orders 1..notch_harmonics below 0.98 Nyquist, a
        centre shared by both families once (300 Hz)."""
        found = {k * f for f in self.mains_families_hz for k in range(1, self.notch_harmonics + 1)
                 if k * f < 0.98 * self.fs_hz / 2}  # fmt: skip
        return sorted(found)

    def notch_quality(self, freq_hz: float) -> float:
        """Quality factor of the notch at `freq_hz` (centre / -3 dB width)."""
        return self.notch_q if self.notch_width_hz is None else freq_hz / self.notch_width_hz

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessingConfig:
        """The config a package stored; a field missing from it takes its meaning from before it existed
        (`LEGACY_DEFAULTS`: only `notch_hz` notched, its first three orders, Q 30), never today's default."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"Unknown preprocessing fields {sorted(unknown)}; known: {sorted(known)}.")
        values = {**LEGACY_DEFAULTS, **data}
        if "bandpass_hz" in values:
            values["bandpass_hz"] = tuple(float(v) for v in values["bandpass_hz"])
        return cls(**values)


# What a stored config without these fields meant (packages written before they existed).
LEGACY_DEFAULTS: dict[str, Any] = {"notch_other_mains": False, "notch_harmonics": 3, "notch_q": 30.0,
                                   "notch_width_hz": None}  # fmt: skip


def design_sos(config: PreprocessingConfig) -> np.ndarray:
    """Second-order sections of the whole chain (band-pass then notches), float64."""
    low, high = config.effective_band_hz
    sections = [signal.butter(config.bandpass_order, [low, high], btype="bandpass", fs=config.fs_hz, output="sos")]
    for freq in config.notch_frequencies():
        b, a = signal.iirnotch(freq, config.notch_quality(freq), fs=config.fs_hz)
        sections.append(signal.tf2sos(b, a))
    return np.concatenate(sections, axis=0)


class _BlockSystem:
    """The cascade of second-order sections as one state-space system, with the matrices that move it a
    block of up to `BLOCK_SAMPLES` samples at once. The state is `scipy.signal.sosfilt`'s (each section's
    two transposed-direct-form-II delays), section by section: `(2 * n_sections, n_channels)`."""

    def __init__(self, sos: np.ndarray) -> None:
        self.n_state = n_state = 2 * sos.shape[0]
        # Column k of the transition is the step from unit state k with no input; the input's own column
        # and the output row follow from one step from zero state with a unit input.
        basis = np.eye(n_state)
        transition, output_row = _cascade_step(sos, basis, np.zeros(n_state))
        drive, direct = _cascade_step(sos, np.zeros((n_state, 1)), np.ones(1))
        drive = drive[:, 0]
        powers = [np.eye(n_state)]
        for _ in range(BLOCK_SAMPLES):
            powers.append(transition @ powers[-1])
        # y[k] = output_row A^k z0 + direct x[k] + sum_{j<k} output_row A^(k-1-j) drive x[j]
        self.observe = np.stack([output_row @ powers[k] for k in range(BLOCK_SAMPLES)])  # (L, S)
        impulse = np.concatenate([[direct[0]], self.observe[:-1] @ drive])  # (L,) response to a unit sample
        lags = np.arange(BLOCK_SAMPLES)[:, None] - np.arange(BLOCK_SAMPLES)[None, :]
        self.response = np.where(lags >= 0, impulse[np.maximum(lags, 0)], 0.0)  # (L, L) lower-triangular Toeplitz
        # z_n = A^n z0 + sum_j A^(n-1-j) drive x[j]: for a block of n, the last n columns of `inject`.
        self.inject = np.stack([powers[k] @ drive for k in range(BLOCK_SAMPLES - 1, -1, -1)], axis=1)  # (S, L)
        self.powers = powers

    def run(self, block: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filter `(n, n_channels)` float64 `block` (n <= BLOCK_SAMPLES) from `state`; returns the output
        and the state after it."""
        n = block.shape[0]
        out = self.response[:n, :n] @ block
        out += self.observe[:n] @ state
        after = self.powers[n] @ state
        after += self.inject[:, BLOCK_SAMPLES - n :] @ block
        return out, after


def _cascade_step(sos: np.ndarray, state: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One sample through the sections for `m` cases at once: `state` `(2 * n_sections, m)`, `x` `(m,)`;
    returns the next state and the output, as `scipy.signal.sosfilt` computes them."""
    after = np.empty_like(state)
    signal_in = x
    for i, (b0, b1, b2, _, a1, a2) in enumerate(sos):
        z0, z1 = state[2 * i], state[2 * i + 1]
        y = b0 * signal_in + z0
        after[2 * i] = b1 * signal_in - a1 * y + z1
        after[2 * i + 1] = b2 * signal_in - a2 * y
        signal_in = y
    return after, signal_in


@cache
def _block_system(config: PreprocessingConfig) -> _BlockSystem:
    """One per configuration, shared by every stream that uses it (read only)."""
    return _BlockSystem(design_sos(config))


@dataclass
class StreamFilter:
    """Stateful causal filter for `(n_samples, n_channels)` chunks; one per stream."""

    config: PreprocessingConfig
    n_channels: int
    _system: _BlockSystem = field(init=False)
    _state: np.ndarray = field(init=False)  # (2 * n_sections, n_channels) float64

    def __post_init__(self) -> None:
        if self.n_channels < 1:
            raise ConfigError(f"n_channels must be >= 1, got {self.n_channels}.")
        self._system = _block_system(self.config)
        self.reset()

    def reset(self) -> None:
        """Forget the history (start of a new recording or after a stream gap)."""
        # State is zero: the first samples see a start-up transient, as any real stream would.
        self._state = np.zeros((self._system.n_state, self.n_channels), dtype=np.float64)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Filter the next `(n_samples, n_channels)` chunk in uV; returns float32 of the same shape."""
        if chunk.ndim != 2 or chunk.shape[1] != self.n_channels:
            raise ConfigError(f"Expected a chunk of shape (n_samples, {self.n_channels}), got {chunk.shape}.")
        out = np.empty(chunk.shape, dtype=np.float32)
        for start in range(0, chunk.shape[0], BLOCK_SAMPLES):
            block = np.asarray(chunk[start : start + BLOCK_SAMPLES], dtype=np.float64)
            filtered, self._state = self._system.run(block, self._state)
            out[start : start + len(block)] = filtered
        return out


def filter_recording(samples: np.ndarray, config: PreprocessingConfig) -> np.ndarray:
    """Filter a whole `(n_samples, n_channels)` recording from a zero state, exactly as a stream."""
    return StreamFilter(config, samples.shape[1]).process(samples)


@dataclass(frozen=True)
class Normalization:
    """Per-channel scale applied after filtering: model input = filtered uV / scale_uv."""

    scale_uv: tuple[float, ...]  # one positive scale per channel (robust RMS of training data)

    def __post_init__(self) -> None:
        if not self.scale_uv or min(self.scale_uv) <= 0:
            raise ConfigError("Normalization.scale_uv must hold one positive value per channel.")

    @classmethod
    def fit(cls, filtered: np.ndarray, *, floor_uv: float = 1.0) -> Normalization:
        """Fit on filtered training data `(n_samples, n_channels)`: the median over channels of their RMS.

        A single scale shared by all channels keeps the spatial amplitude pattern (which carries the
        gesture) intact; the floor keeps silent data from inflating noise.
        """
        rms = np.sqrt(np.mean(filtered.astype(np.float64) ** 2, axis=0))
        scale = max(float(np.median(rms)), floor_uv)
        return cls(scale_uv=tuple([scale] * filtered.shape[1]))

    @cached_property
    def _scale(self) -> np.ndarray:
        return np.asarray(self.scale_uv, dtype=np.float32)  # (n_channels,), built once (apply runs per window)

    def apply(self, filtered: np.ndarray) -> np.ndarray:
        """Scale `(..., n_channels)` filtered data; float32."""
        scale = self._scale
        if filtered.shape[-1] != scale.size:
            raise ConfigError(f"Data has {filtered.shape[-1]} channels, normalisation has {scale.size}.")
        return (filtered / scale).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {"scale_uv": list(self.scale_uv)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        return cls(scale_uv=tuple(float(v) for v in data["scale_uv"]))
