"""Windows over filtered EMG: one window of `window_ms` every `hop_ms`.

Training (`window_ends` + `extract_windows` over a filtered recording) and serving
(`StreamWindower` over filtered chunks) produce windows ending at the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rohde.core.errors import ConfigError


@dataclass(frozen=True)
class WindowConfig:
    window_ms: float  # length of one decision window
    hop_ms: float  # time between successive decisions

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.hop_ms <= 0:
            raise ConfigError(f"window_ms and hop_ms must be positive, got {self.window_ms}, {self.hop_ms}.")

    def window_samples(self, fs_hz: float) -> int:
        return max(1, int(round(self.window_ms * fs_hz / 1000.0)))

    def hop_samples(self, fs_hz: float) -> int:
        return max(1, int(round(self.hop_ms * fs_hz / 1000.0)))


def window_ends(n_samples: int, window: int, hop: int) -> np.ndarray:
    """Exclusive end index of every full window: window, window + hop, ... <= n_samples."""
    if n_samples < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(window, n_samples + 1, hop, dtype=np.int64)


def extract_windows(filtered: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """Windows `(n_windows, n_channels, window)` ending at `ends` from `(n_samples, n_channels)`."""
    if len(ends) == 0:
        return np.zeros((0, filtered.shape[1], window), dtype=np.float32)
    offsets = np.arange(-window, 0)
    idx = ends[:, None] + offsets[None, :]  # (N, W)
    return np.ascontiguousarray(filtered[idx].transpose(0, 2, 1), dtype=np.float32)


def ring_write(ring: np.ndarray, index: int, values: np.ndarray) -> None:
    """Write `values` (at most `len(ring)` rows) into `ring` so that row i lands at `(index + i) % len(ring)`:
    two slice copies, no index array."""
    pos = index % len(ring)
    first = min(len(values), len(ring) - pos)
    ring[pos : pos + first] = values[:first]
    ring[: len(values) - first] = values[first:]


class StreamWindower:
    """Ring buffer of filtered samples that emits a window every `hop` samples.

    The first window ends at sample `window` of the stream, the next `hop` later, exactly as
    `window_ends` counts them offline.
    """

    def __init__(self, n_channels: int, window: int, hop: int, *, capacity: int | None = None) -> None:
        if window < 1 or hop < 1:
            raise ConfigError(f"window and hop must be >= 1 sample, got {window}, {hop}.")
        self.n_channels = n_channels
        self.window = window
        self.hop = hop
        self.capacity = capacity or 4 * window + hop
        # Channel-major: a hop's samples are written transposed once, and each window (`window` samples, several
        # hops) is read as `n_channels` contiguous rows, the layout the model takes.
        self._buffer = np.zeros((n_channels, self.capacity), dtype=np.float32)
        self._total = 0  # samples ever written
        self._next_end = window  # stream sample index at which the next window ends

    @property
    def total_samples(self) -> int:
        return self._total

    @property
    def samples_until_next_window(self) -> int:
        """Samples still to be pushed before the next window is ready (at least 1)."""
        return self._next_end - self._total

    def reset(self) -> None:
        self._total = 0
        self._next_end = self.window

    def push(self, filtered: np.ndarray, *, scale: np.ndarray | None = None) -> list[tuple[int, np.ndarray]]:
        """Append `(n_samples, n_channels)`; return (end index, `(n_channels, window)`) per ready window, each
        divided by the `(n_channels,)` float32 `scale` when given (the same float32 division as
        `Normalization.apply` on the samples, fused into the window's one copy)."""
        ready: list[tuple[int, np.ndarray]] = []
        start = 0
        n = filtered.shape[0]
        while start < n:
            # Write no further than the next window end so no sample it needs is overwritten.
            take = min(n - start, self._next_end - self._total, self.capacity - self.window)
            self._write(filtered[start : start + take])
            start += take
            while self._total >= self._next_end:
                ready.append((self._next_end, self._read(self._next_end, scale)))
                self._next_end += self.hop
        return ready

    def _write(self, chunk: np.ndarray) -> None:
        ring_write(self._buffer.T, self._total, chunk)
        self._total += len(chunk)

    def _read(self, end: int, scale: np.ndarray | None) -> np.ndarray:
        """The window ending at stream sample `end`, `(n_channels, window)` float32, divided by `scale`
        `(n_channels,)` when given, in one pass over the ring (two slices when it wraps)."""
        start = (end - self.window) % self.capacity
        first = min(self.window, self.capacity - start)  # samples before the ring wraps
        out = np.empty((self.n_channels, self.window), dtype=np.float32)
        for dst, src in ((out[:, :first], self._buffer[:, start : start + first]),
                         (out[:, first:], self._buffer[:, : self.window - first])):
            if dst.shape[1] == 0:
                continue
            if scale is None:
                np.copyto(dst, src)
            else:
                np.divide(src, scale[:, None], out=dst)
        return out
