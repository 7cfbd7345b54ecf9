"""Causal, stateful preprocessing shared by training and serving.

Band-pass (Butterworth) and power-line notches as second-order sections, run with
`scipy.signal.sosfilt` while keeping the filter state between calls. Filtering a recording in one
call or chunk by chunk therefore gives the same samples: training filters whole recordings with
`StreamFilter`, the server filters each pulled chunk with the very same class.

Arrays are `(n_samples, n_channels)`, as LSL delivers them and as recordings are stored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from scipy import signal

from rohde.core.errors import ConfigError


@dataclass(frozen=True)
class PreprocessingConfig:
    """What the filter chain does; stored in every model package."""

    fs_hz: float  # sampling rate of the stream
    bandpass_hz: tuple[float, float] = (20.0, 450.0)  # surface-EMG band; upper edge capped below Nyquist
    bandpass_order: int = 4  # Butterworth order of each of the high-pass and low-pass halves
    notch_hz: float | None = 50.0  # power-line fundamental (50 or 60), None for no notch
    notch_harmonics: int = 3  # notch the fundamental and this many harmonics minus one
    notch_q: float = 30.0  # quality factor of each notch

    def __post_init__(self) -> None:
        if self.fs_hz <= 0:
            raise ConfigError(f"fs_hz must be positive, got {self.fs_hz}.")
        low, high = self.bandpass_hz
        if not 0 < low < high:
            raise ConfigError(f"bandpass_hz must be (low, high) with 0 < low < high, got {self.bandpass_hz}.")
        if self.notch_hz is not None and self.notch_hz not in (50.0, 60.0):
            raise ConfigError(f"notch_hz must be 50, 60 or None, got {self.notch_hz}.")

    @property
    def effective_band_hz(self) -> tuple[float, float]:
        """The band really applied: the upper edge scaled down to 0.45 fs where fs is low."""
        low, high = self.bandpass_hz
        return low, min(high, 0.45 * self.fs_hz)

    def notch_frequencies(self) -> list[float]:
        if self.notch_hz is None:
            return []
        nyquist = self.fs_hz / 2
        return [k * self.notch_hz for k in range(1, self.notch_harmonics + 1) if k * self.notch_hz < 0.98 * nyquist]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessingConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"Unknown preprocessing fields {sorted(unknown)}; known: {sorted(known)}.")
        values = dict(data)
        if "bandpass_hz" in values:
            values["bandpass_hz"] = tuple(float(v) for v in values["bandpass_hz"])
        return cls(**values)


def design_sos(config: PreprocessingConfig) -> np.ndarray:
    """Second-order sections of the whole chain (band-pass then notches), float64."""
    low, high = config.effective_band_hz
    sections = [signal.butter(config.bandpass_order, [low, high], btype="bandpass", fs=config.fs_hz, output="sos")]
    for freq in config.notch_frequencies():
        b, a = signal.iirnotch(freq, config.notch_q, fs=config.fs_hz)
        sections.append(signal.tf2sos(b, a))
    return np.concatenate(sections, axis=0)


@dataclass
class StreamFilter:
    """Stateful causal filter for `(n_samples, n_channels)` chunks; one per stream."""

    config: PreprocessingConfig
    n_channels: int
    sos: np.ndarray = field(init=False)
    _state: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.n_channels < 1:
            raise ConfigError(f"n_channels must be >= 1, got {self.n_channels}.")
        self.sos = design_sos(self.config)
        self.reset()

    def reset(self) -> None:
        """Forget the history (start of a new recording or after a stream gap)."""
        # State is zero: the first samples see a start-up transient, as any real stream would.
        self._state = np.zeros((self.sos.shape[0], 2, self.n_channels), dtype=np.float64)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Filter the next `(n_samples, n_channels)` chunk in uV; returns float32 of the same shape."""
        if chunk.ndim != 2 or chunk.shape[1] != self.n_channels:
            raise ConfigError(f"Expected a chunk of shape (n_samples, {self.n_channels}), got {chunk.shape}.")
        if chunk.shape[0] == 0:
            return np.zeros((0, self.n_channels), dtype=np.float32)
        out, self._state = signal.sosfilt(self.sos, chunk, axis=0, zi=self._state)
        return out.astype(np.float32, copy=False)


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
