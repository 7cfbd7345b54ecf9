"""Bad channels rebuilt from their grid neighbours: the one code path of quality-aware inference.

A channel the detector (`rohde.core.channel_quality`) flags is replaced by the mean of its good
8-neighbours in the same grid; inside a wider flagged patch, by the mean of its neighbours rebuilt
before it, ring by ring from the patch's edge (zero only where a whole grid is flagged), so the
classifier sees a plausible spatial pattern instead of the disturbance or a hole. The rebuild is
linear and per channel, like the causal filter, so rebuilding raw samples and then filtering equals
filtering and then rebuilding; training (`rohde.training.augment.mask_augment`, which rebuilds random
channels so a rebuilt channel is ordinary input), serving (the window assembler, on each normalised
window, with the live monitor's bad channels) and evaluation as served (`rebuild_windows`, with the
monitor replayed offline) call the same `ChannelRepair.rebuild`.

A model package opts in with `training_data["quality_masking"] = true` (`QUALITY_MASKING_KEY`): the
server rebuilds the bad channels of its windows only for models trained to expect it.
"""

from __future__ import annotations

import numpy as np

from rohde.core.channel_quality import neighbour_table
from rohde.core.errors import ConfigError
from rohde.core.layouts import ElectrodeLayout

QUALITY_MASKING_KEY = "quality_masking"  # model metadata training_data flag: rebuild bad channels first


class ChannelRepair:
    """Rebuilds flagged channels of `(..., n_channels, n_samples)` data from their good neighbours."""

    def __init__(self, layout: ElectrodeLayout) -> None:
        self.layout = layout
        self.neighbours = neighbour_table(layout)  # (C, 8), -1 padded
        self._has = self.neighbours >= 0
        self._nb = np.where(self._has, self.neighbours, 0)
        self._cached: tuple[bytes, np.ndarray, np.ndarray] | None = None  # (bad mask, rows, weights) of the last call

    def weights(self, bad: np.ndarray) -> np.ndarray:
        """(k, C) float32, non-zero on good channels only: row i rebuilds the i-th bad channel.

        A bad channel with good neighbours is their mean; one whose neighbours are all bad is the mean of its
        neighbours rebuilt the pass before, ring by ring from the outside in, so a flagged patch wider than one
        electrode has no hole of zeros in it. A grid without a good channel stays zero."""
        bad = np.asarray(bad, dtype=bool)
        n = self.layout.n_channels
        if bad.shape != (n,):
            raise ConfigError(f"bad must be a ({n},) bool mask, got shape {bad.shape}.")
        expr = np.diag((~bad).astype(np.float64))  # (C, C): each channel as a combination of the good ones
        known, pending = ~bad, bad.copy()
        while pending.any():
            idx = np.flatnonzero(pending)
            use = self._has[idx] & known[self._nb[idx]]  # (m, 8) known neighbours
            reached = np.flatnonzero(use.any(axis=1))
            if not reached.size:
                break
            filled = np.stack([expr[self._nb[idx[i]][use[i]]].mean(axis=0) for i in reached])
            expr[idx[reached]] = filled
            known[idx[reached]] = True
            pending[idx[reached]] = False
        return expr[np.flatnonzero(bad)].astype(np.float32)

    def rebuild(self, data: np.ndarray, bad: np.ndarray) -> np.ndarray:
        """A copy of `data` `(..., C, T)` with the `bad` `(C,)` channels rebuilt (unchanged when none is bad)."""
        bad = np.asarray(bad, dtype=bool)
        if bad.shape != (self.layout.n_channels,) or data.shape[-2] != self.layout.n_channels:
            raise ConfigError(
                f"data must be (..., {self.layout.n_channels}, n_samples) and bad ({self.layout.n_channels},), "
                f"got {data.shape} and {bad.shape}."
            )
        if not bad.any():
            return data
        key = bad.tobytes()
        if self._cached is None or self._cached[0] != key:  # the bad set changes seldom: build its weights once
            self._cached = (key, np.flatnonzero(bad), self.weights(bad))
        _, rows, weights = self._cached
        out = data.copy()
        out[..., rows, :] = np.matmul(weights, data).astype(data.dtype, copy=False)  # (..., k, T)
        return out

    def fill(self, values: np.ndarray, bad: np.ndarray) -> np.ndarray:
        """A copy of a per-channel map `values` `(C,)` (an activity map, not samples) with the `bad` `(C,)` channels
        rebuilt as `rebuild` does (ring by ring); a grid with no good channel keeps its values."""
        out = np.asarray(values, dtype=np.float64).copy()
        if out.shape != (self.layout.n_channels,):
            raise ConfigError(f"values must be ({self.layout.n_channels},), got shape {out.shape}.")
        rows = np.flatnonzero(np.asarray(bad, dtype=bool))
        w = self.weights(bad).astype(np.float64)
        reached = w.sum(axis=1) > 0
        out[rows[reached]] = w[reached] @ out
        return out

    def rebuild_channels(self, data: np.ndarray, channels: tuple[int, ...] | list[int]) -> np.ndarray:
        """`rebuild` with the bad channels given by index (as the server's windows carry them)."""
        bad = np.zeros(self.layout.n_channels, dtype=bool)
        bad[list(channels)] = True
        return self.rebuild(data, bad)

    def rebuild_windows(self, windows: np.ndarray, channels: list[tuple[int, ...]]) -> np.ndarray:
        """Windows `(n, C, W)` each rebuilt with its own bad channels `channels[i]` (runs of equal sets at once)."""
        if len(channels) != len(windows):
            raise ConfigError(f"{len(channels)} bad-channel sets for {len(windows)} windows.")
        if not any(channels):
            return windows
        out = windows.copy()
        start = 0
        for i in range(1, len(channels) + 1):
            if i == len(channels) or channels[i] != channels[start]:
                if channels[start]:
                    out[start:i] = self.rebuild_channels(windows[start:i], channels[start])
                start = i
        return out
