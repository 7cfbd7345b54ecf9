"""Electrode shift as a disturbance: the array put on again somewhere else.

Re-applying an HD-EMG array moves every electrode at once: the activity pattern slides over the
grid (4-5 rows and up to 2 columns on the flexemg forearm array between days), may turn a little,
and the contact changes the amplitude (1.4-1.9 times there). `shift_recording` applies such a
re-donning to any recording and layout, with ground truth:

- translation along either grid axis in electrode sites, fractions by bilinear interpolation;
  circular along an axis the grid marks as `wraps` (around the limb), else the sites that move
  off the recorded area read the nearest edge electrode (the array does not know what lies
  beyond it);
- a small rotation about the grid centre;
- a global gain and, optionally, a per-channel gain spread (contact impedance differs electrode
  by electrode).

The resampling is linear and the same for every sample (`rohde.core.alignment.resampling_matrix`),
so shifting raw data and then filtering equals filtering and then shifting. The applied shift is
recorded in `provenance["electrode_shift"]` (and returned by `random_shift`), so alignment can be
scored against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rohde.core.alignment import GridShift, resampling_matrix, round_trip_matrix
from rohde.core.errors import ConfigError
from rohde.core.layouts import ElectrodeLayout
from rohde.core.recording import Recording


@dataclass(frozen=True)
class ShiftRange:
    """Bounds of a random re-donning; every value is drawn uniformly within +- its bound."""

    max_rows: float = 2.0  # sites along the rows axis
    max_cols: float = 2.0  # sites along the columns axis
    max_rotation_deg: float = 0.0  # rotation about the grid centre
    gain_range: tuple[float, float] = (1.0, 1.0)  # global amplitude factor, drawn log-uniformly
    channel_gain_spread: float = 0.0  # per-channel gain = global * exp(N(0, spread))
    integer: bool = False  # whole sites only
    # Re-donned, then moved back by alignment: the sites that left the grid come back edge-filled and
    # fractional moves blur twice. What a model that runs behind label-free alignment meets.
    moved_back: bool = False

    def __post_init__(self) -> None:
        if min(self.max_rows, self.max_cols, self.max_rotation_deg, self.channel_gain_spread) < 0:
            raise ConfigError(f"ShiftRange bounds must be non-negative, got {self}.")
        low, high = self.gain_range
        if not 0 < low <= high:
            raise ConfigError(f"ShiftRange.gain_range must be (low, high) with 0 < low <= high, got {self.gain_range}.")


def random_shift(rng: np.random.Generator, shift_range: ShiftRange) -> GridShift:
    """One random re-donning within `shift_range` (the channel gain spread is drawn by `shift_recording`)."""

    def draw(bound: float) -> float:
        value = float(rng.uniform(-bound, bound)) if bound > 0 else 0.0
        return float(np.round(value)) if shift_range.integer else value

    low, high = shift_range.gain_range
    gain = float(np.exp(rng.uniform(np.log(low), np.log(high)))) if high > low else low
    rotation = float(rng.uniform(-shift_range.max_rotation_deg, shift_range.max_rotation_deg))
    return GridShift(rows=draw(shift_range.max_rows), cols=draw(shift_range.max_cols), rotation_deg=rotation, gain=gain)


def redonning_matrix(layout: ElectrodeLayout, shift: GridShift, *, moved_back: bool = False) -> np.ndarray:
    """`(C, C)` map of the re-donning `shift`, gain left out: `resampling_matrix`, or with `moved_back` the move
    and its inverse (`round_trip_matrix`: what exact alignment leaves of it)."""
    return round_trip_matrix(layout, shift) if moved_back else resampling_matrix(layout, shift)


def shift_samples(
    samples: np.ndarray,
    recording_layout: ElectrodeLayout,
    shift: GridShift,
    *,
    channel_gain: np.ndarray | None = None,
    moved_back: bool = False,
) -> np.ndarray:
    """Samples `(n, C)` after the re-donning `shift` (gain included) and an optional per-channel gain `(C,)`;
    with `moved_back`, then moved back onto the grid (`round_trip_matrix`), the gain kept."""
    grid = redonning_matrix(recording_layout, shift, moved_back=moved_back)
    return _apply(samples, recording_layout, shift.gain * grid, channel_gain)


def _apply(samples: np.ndarray, layout: ElectrodeLayout, matrix: np.ndarray,
           channel_gain: np.ndarray | None) -> np.ndarray:  # fmt: skip
    if samples.ndim != 2 or samples.shape[1] != layout.n_channels:
        raise ConfigError(f"Expected samples (n, {layout.n_channels}) for layout {layout.name!r}, got {samples.shape}.")
    if channel_gain is not None:
        channel_gain = np.asarray(channel_gain, dtype=np.float64)
        if channel_gain.shape != (samples.shape[1],) or np.any(channel_gain <= 0):
            raise ConfigError(f"channel_gain must be ({samples.shape[1]},) positive factors.")
        matrix = channel_gain[:, None] * matrix
    return (samples.astype(np.float64) @ matrix.T).astype(np.float32)


def shift_recording(
    recording: Recording,
    shift: GridShift,
    *,
    channel_gain_spread: float = 0.0,
    rng: np.random.Generator | None = None,
    moved_back: bool = False,
) -> Recording:
    """`recording` as if the array had been put on again by `shift` (and with `moved_back`, moved back onto
    the grid by exact alignment: `ShiftRange.moved_back`); labels and timing kept.

    The disturbance mask (if any) moves with the electrodes' signals: a channel is marked when any
    channel it reads from was. The ground truth goes to `provenance["electrode_shift"]`.
    """
    channel_gain = None
    if channel_gain_spread > 0:
        if rng is None:
            raise ConfigError("channel_gain_spread > 0 needs an rng to draw the per-channel gains.")
        channel_gain = np.exp(rng.normal(0.0, channel_gain_spread, size=recording.n_channels))
    grid = redonning_matrix(recording.layout, shift, moved_back=moved_back)  # one map for samples and mask
    samples = _apply(recording.samples, recording.layout, shift.gain * grid, channel_gain)
    mask = recording.disturbance_mask
    if mask is not None:
        reads = grid > 0  # (C_out, C_in)
        mask = (mask.astype(np.uint8) @ reads.T.astype(np.uint8)) > 0
    truth: dict[str, Any] = shift.to_dict()
    if channel_gain is not None:
        truth["channel_gain"] = [float(g) for g in channel_gain]
    return recording.with_samples(
        samples,
        disturbance_mask=mask,
        provenance={**recording.provenance, "electrode_shift": truth},
    )


def random_shift_recording(recording: Recording, shift_range: ShiftRange, *, seed: int) -> tuple[Recording, GridShift]:
    """`recording` re-donned at random within `shift_range` (seeded); returns it and the applied shift."""
    rng = np.random.default_rng(seed)
    shift = random_shift(rng, shift_range)
    moved = shift_recording(recording, shift, channel_gain_spread=shift_range.channel_gain_spread, rng=rng,
                            moved_back=shift_range.moved_back)  # fmt: skip
    return moved, shift
