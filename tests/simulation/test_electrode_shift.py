"""Electrode shift (re-donning) as a disturbance: any recording and layout, with ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from rohde.core.alignment import GridShift
from rohde.core.errors import ConfigError
from rohde.core.layouts import ElectrodeGrid, ElectrodeLayout, default_layout, flexemg_layout
from rohde.core.preprocessing import PreprocessingConfig, filter_recording
from rohde.core.recording import Recording
from rohde.simulation.electrode_shift import (
    ShiftRange,
    random_shift,
    random_shift_recording,
    shift_recording,
    shift_samples,
)


def _recording(layout: ElectrodeLayout, n: int = 400, seed: int = 0) -> Recording:
    rng = np.random.default_rng(seed)
    return Recording(
        samples=rng.standard_normal((n, layout.n_channels)).astype(np.float32) * 20,
        fs_hz=1000.0,
        layout=layout,
        labels=np.zeros(n, dtype=np.int16),
        gesture_names=("rest",),
        disturbance_mask=np.zeros((n, layout.n_channels), dtype=bool),
    )


def test_integer_shift_on_the_default_layout_moves_each_grid_within_itself() -> None:
    layout = default_layout()
    rec = _recording(layout)
    shifted = shift_recording(rec, GridShift(rows=1, cols=2, gain=1.5))
    index = layout.index_array()
    for g in range(3):
        # Site (r, c) now holds 1.5 x what (r - 1, c - 2) recorded, on the same grid.
        np.testing.assert_allclose(shifted.samples[:, index[g, 5, 6]], 1.5 * rec.samples[:, index[g, 4, 4]], rtol=1e-5)
    assert shifted.provenance["electrode_shift"] == {"rows": 1.0, "cols": 2.0, "rotation_deg": 0.0, "gain": 1.5}
    assert np.array_equal(shifted.labels, rec.labels) and shifted.n_samples == rec.n_samples


def test_shift_commutes_with_the_causal_filter() -> None:
    rec = _recording(flexemg_layout(), n=2000)
    config = PreprocessingConfig(fs_hz=1000.0, notch_hz=60.0)
    shift = GridShift(rows=2.5, cols=-0.75, rotation_deg=5.0, gain=0.8)
    a = filter_recording(shift_samples(rec.samples, rec.layout, shift), config)
    b = shift_samples(filter_recording(rec.samples, config), rec.layout, shift)
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_wrapping_grid_brings_the_pattern_round_and_edge_grid_does_not() -> None:
    index = np.arange(8).reshape(4, 2)
    channels = tuple(tuple(int(c) for c in row) for row in index)
    ring = ElectrodeLayout("ring", (ElectrodeGrid("g", channels, wraps=(True, False)),), n_channels=8)
    strip = ElectrodeLayout("strip", (ElectrodeGrid("g", channels),), n_channels=8)
    x = np.eye(8, dtype=np.float32)  # sample k is a unit impulse on channel k
    moved_ring = shift_samples(x, ring, GridShift(rows=1))
    moved_strip = shift_samples(x, strip, GridShift(rows=1))
    assert moved_ring[6, 0] == 1.0  # the last row's impulse comes round to row 0
    assert moved_strip[6, 0] == 0.0 and moved_strip[0, 0] == 1.0  # row 0 repeats the edge row
    assert moved_strip[6].sum() == 0.0  # the last row left the array


def test_random_shift_respects_its_range_and_records_channel_gains() -> None:
    rng = np.random.default_rng(3)
    bounds = ShiftRange(max_rows=2.0, max_cols=1.0, max_rotation_deg=5.0, gain_range=(0.5, 2.0))
    shifts = [random_shift(rng, bounds) for _ in range(200)]
    assert max(abs(s.rows) for s in shifts) <= 2.0 and max(abs(s.cols) for s in shifts) <= 1.0
    assert min(s.gain for s in shifts) >= 0.5 and max(s.gain for s in shifts) <= 2.0
    assert len({round(s.rows, 6) for s in shifts}) > 100  # fractional draws
    whole = [random_shift(rng, ShiftRange(max_rows=2.0, integer=True)) for _ in range(50)]
    assert {s.rows for s in whole} <= {-2.0, -1.0, 0.0, 1.0, 2.0}
    rec, shift = random_shift_recording(_recording(flexemg_layout()),
                                        ShiftRange(channel_gain_spread=0.1), seed=7)  # fmt: skip
    truth = rec.provenance["electrode_shift"]
    assert truth["rows"] == shift.rows and len(truth["channel_gain"]) == 64
    again, _ = random_shift_recording(_recording(flexemg_layout()), ShiftRange(channel_gain_spread=0.1), seed=7)
    assert np.array_equal(rec.samples, again.samples)  # seeded


def test_disturbance_mask_moves_with_the_signals() -> None:
    layout = flexemg_layout()
    rec = _recording(layout)
    image = layout.index_array()[0]
    rec.disturbance_mask[:, image[15, :]] = True  # last row disturbed
    shifted = shift_recording(rec, GridShift(rows=-3))
    assert shifted.disturbance_mask is not None
    assert shifted.disturbance_mask[0, image[12, :]].all() and not shifted.disturbance_mask[0, image[10, :]].any()


def test_moved_back_keeps_the_rows_that_stayed_and_copies_the_edge_into_those_that_left() -> None:
    layout = flexemg_layout()
    rec = _recording(layout)
    image = layout.index_array()[0]
    rec.disturbance_mask[:, image[0, :]] = True  # first row disturbed
    back = shift_recording(rec, GridShift(rows=-3, gain=2.0), moved_back=True)
    x, y = rec.samples, back.samples
    for r in range(3, 16):  # stayed on the grid: only the gain
        np.testing.assert_allclose(y[:, image[r, :]], 2.0 * x[:, image[r, :]], rtol=1e-5)
    for r in (0, 1, 2):  # moved to rows -3 to -1, off the grid: they come back as row 3's copy
        np.testing.assert_allclose(y[:, image[r, :]], 2.0 * x[:, image[3, :]], rtol=1e-5)
    # The disturbed row 0 was lost with them: its site now reads row 3, which the mask does not cover.
    assert back.disturbance_mask is not None and not back.disturbance_mask[0, image[0, :]].any()
    drawn, shift = random_shift_recording(rec, ShiftRange(max_rows=3, max_cols=0, integer=True, moved_back=True),
                                          seed=1)  # fmt: skip
    assert drawn.provenance["electrode_shift"]["rows"] == shift.rows


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError):
        ShiftRange(max_rows=-1)
    with pytest.raises(ConfigError):
        ShiftRange(gain_range=(2.0, 1.0))
    with pytest.raises(ConfigError):
        shift_samples(np.zeros((3, 5)), flexemg_layout(), GridShift())
    with pytest.raises(ConfigError):
        shift_recording(_recording(flexemg_layout()), GridShift(), channel_gain_spread=0.1)
