"""Label-free grid alignment: resampling matrices, shift estimation, the layout's `wraps`, real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rohde.core.alignment import (
    AlignmentReference,
    GridShift,
    LiveAlignment,
    activity_map,
    alignment_matrix,
    apply_shift,
    estimate_shift,
    resampling_matrix,
    resampling_weights,
    round_trip_matrix,
    valid_sites,
)
from rohde.core.errors import ConfigError, LayoutError
from rohde.core.layouts import ElectrodeGrid, ElectrodeLayout, flexemg_layout, grid_layout
from rohde.core.preprocessing import PreprocessingConfig, filter_recording
from rohde.core.recording import Recording


def _ramp_layout(rows: int = 6, cols: int = 4, wraps: tuple[bool, bool] = (False, False)) -> ElectrodeLayout:
    index = np.arange(rows * cols).reshape(rows, cols)
    grid = ElectrodeGrid("g", tuple(tuple(int(c) for c in row) for row in index), wraps=wraps)
    return ElectrodeLayout("ramp", (grid,), n_channels=rows * cols)


def _blob_map(layout: ElectrodeLayout, centres: list[tuple[float, float, float]], width: float = 2.0) -> np.ndarray:
    """A smooth positive activity map `(C,)`: Gaussian blobs (row, col, height) over a floor."""
    values = np.full(layout.n_channels, 2.0)
    for e in layout.channel_map():
        for r0, c0, h in centres:
            values[e["channel"]] += h * np.exp(-((e["row"] - r0) ** 2 + (e["col"] - c0) ** 2) / (2 * width**2))
    return values


def test_integer_shift_moves_values_and_fills_edges() -> None:
    layout = _ramp_layout()
    image = layout.index_array()[0]
    x = np.arange(layout.n_channels, dtype=np.float64)[None, :] * 10  # value = 10 * channel
    moved = apply_shift(x, layout, GridShift(rows=2, cols=-1), include_gain=False)[0]
    # Site (r, c) reads (r - 2, c + 1); rows 0-1 read the edge row 0, column 3 reads column 3.
    assert moved[image[4, 1]] == pytest.approx(10 * image[2, 2])
    assert moved[image[0, 0]] == pytest.approx(10 * image[0, 1])
    assert moved[image[5, 3]] == pytest.approx(10 * image[3, 3])
    valid = valid_sites(layout, GridShift(rows=2, cols=-1))
    assert valid.sum() == 4 * 3 and not valid[image[0, 0]] and valid[image[2, 0]]


def test_wrapping_axis_is_circular_and_exactly_invertible() -> None:
    layout = _ramp_layout(wraps=(True, False))
    image = layout.index_array()[0]
    x = np.random.default_rng(0).standard_normal((50, layout.n_channels))
    moved = apply_shift(x, layout, GridShift(rows=2))
    assert np.allclose(moved[:, image[0, 1]], x[:, image[4, 1]])  # row 0 reads row -2 = row 4
    back = apply_shift(moved, layout, GridShift(rows=2).inverse())
    assert np.allclose(back, x, atol=1e-5)
    assert valid_sites(layout, GridShift(rows=3)).all()


def test_round_trip_keeps_the_sites_that_stayed_and_edge_fills_the_rest() -> None:
    layout = _ramp_layout()
    image = layout.index_array()[0]
    x = np.random.default_rng(1).standard_normal((20, layout.n_channels))
    shift = GridShift(rows=2, cols=0, gain=3.0)
    back = x @ round_trip_matrix(layout, shift).T
    # Rows 0-3 went to rows 2-5 and came back; rows 4-5 left the grid and come back as row 3's copy.
    for r in range(4):
        assert np.allclose(back[:, image[r]], x[:, image[r]])
    assert np.allclose(back[:, image[4]], x[:, image[3]]) and np.allclose(back[:, image[5]], x[:, image[3]])
    assert np.allclose(round_trip_matrix(_ramp_layout(wraps=(True, False)), shift), np.eye(layout.n_channels))


def test_fractional_shift_interpolates_and_rows_sum_to_one() -> None:
    layout = _ramp_layout()
    matrix = resampling_matrix(layout, GridShift(rows=0.5, cols=0.25, rotation_deg=10.0))
    assert np.allclose(matrix.sum(axis=1), 1.0)
    image = layout.index_array()[0]
    half = resampling_matrix(layout, GridShift(rows=0.5))
    assert half[image[3, 2], image[2, 2]] == pytest.approx(0.5) and half[image[3, 2], image[3, 2]] == pytest.approx(0.5)


def test_inverse_undoes_rotation_and_translation() -> None:
    shift = GridShift(rows=1.5, cols=-0.5, rotation_deg=12.0, gain=1.7)
    inv = shift.inverse()
    back = inv.inverse()
    assert (back.rows, back.cols, back.rotation_deg, back.gain) == pytest.approx((1.5, -0.5, 12.0, 1.7))
    layout = _ramp_layout(rows=12, cols=12)
    # Away from the edges, shift then inverse is the identity on a smooth map (up to the blur of
    # interpolating twice).
    smooth = _blob_map(layout, [(5.5, 5.5, 10.0)], width=3.0)
    there_and_back = resampling_matrix(layout, inv) @ (resampling_matrix(layout, shift) @ smooth)
    centre = [e["channel"] for e in layout.channel_map() if 3 <= e["row"] <= 8 and 3 <= e["col"] <= 8]
    assert np.allclose(there_and_back[centre], smooth[centre], rtol=0.05)


def test_unmapped_channels_pass_through_and_missing_electrodes_are_skipped() -> None:
    grid = ElectrodeGrid("g", ((0, 1, 2), (3, -1, 4)))
    layout = ElectrodeLayout("holes", (grid,), n_channels=6)  # channel 5 is on no grid
    matrix = resampling_matrix(layout, GridShift(cols=1))
    assert matrix[5, 5] == 1.0 and matrix[5, :5].sum() == 0
    # (1, 2) reads (1, 1), which is absent: one of the present electrodes next to it instead.
    assert matrix[4].max() == 1.0 and int(np.argmax(matrix[4])) in (1, 3, 4)
    assert matrix[1, 0] == 1.0  # (0, 1) reads (0, 0)
    assert np.allclose(matrix.sum(axis=1), 1.0)


def test_the_sparse_weights_move_a_map_as_the_dense_matrix_does() -> None:
    # Holes, a channel on no grid, a wrapping axis and a rotation: four weighted sources per channel, same move.
    grid = ElectrodeGrid("g", ((0, 1, 2), (3, -1, 4), (5, 6, 7)), wraps=(False, True))
    layout = ElectrodeLayout("holes", (grid,), n_channels=9)
    x = np.random.default_rng(0).random(9)
    for shift in (GridShift(cols=1), GridShift(rows=0.6, cols=-1.3, rotation_deg=12.0), GridShift(rows=-2.5)):
        sources, weights = resampling_weights(layout, shift)
        assert sources.shape == weights.shape == (9, 4) and np.allclose(weights.sum(axis=1), 1.0)
        np.testing.assert_allclose((weights * x[sources]).sum(axis=1), resampling_matrix(layout, shift) @ x,
                                   rtol=1e-12)


@pytest.mark.parametrize("truth", [GridShift(rows=4.5, cols=-1.0, gain=1.6), GridShift(rows=-3.0, cols=1.5, gain=0.7)])
def test_estimate_recovers_a_known_shift_and_gain(truth: GridShift) -> None:
    layout = flexemg_layout()
    reference = _blob_map(layout, [(3.0, 1.0, 30.0), (9.0, 2.5, 20.0), (13.0, 0.5, 12.0)])
    new = resampling_matrix(layout, truth, include_gain=True) @ reference
    new *= np.exp(np.random.default_rng(1).normal(0, 0.03, size=new.size))  # a little noise
    estimate = estimate_shift(AlignmentReference(tuple(reference.tolist())), new, layout)
    assert estimate.shift.rows == pytest.approx(truth.rows, abs=0.26)
    assert estimate.shift.cols == pytest.approx(truth.cols, abs=0.26)
    assert estimate.shift.gain == pytest.approx(truth.gain, rel=0.1)
    assert estimate.score > 0.95 > estimate.score_unshifted
    # Aligning the new map brings it back onto the reference where the grids overlap.
    aligned = alignment_matrix(layout, estimate) @ new
    overlap = valid_sites(layout, estimate.shift.inverse())
    assert np.corrcoef(aligned[overlap], reference[overlap])[0, 1] > 0.97


def test_reference_round_trip_and_bad_input() -> None:
    reference = AlignmentReference.from_filtered(np.ones((100, 4)) * [1.0, -2.0, 3.0, 0.0], fs_hz=100.0)
    assert reference.activity_uv == (1.0, 2.0, 3.0, 0.0) and reference.seconds == 1.0
    assert AlignmentReference.from_dict(reference.to_dict()) == reference
    with pytest.raises(ConfigError):
        AlignmentReference.from_dict({"method": "pca"})
    with pytest.raises(ConfigError):
        estimate_shift(reference, np.ones(5), grid_layout(1, 2, 2))
    with pytest.raises(ConfigError):
        GridShift(gain=0.0)
    with pytest.raises(ConfigError):
        activity_map(np.zeros((0, 4)))


def test_reference_of_recordings_is_the_map_of_all_their_filtered_samples() -> None:
    """What `rohde train` stores: each recording filtered from a zero state, every sample of all of them mixed."""
    layout = grid_layout(1, 2, 2)
    rng = np.random.default_rng(0)
    recordings = [Recording(samples=(rng.standard_normal((n, 4)) * [1.0, 2.0, 3.0, 4.0]).astype(np.float32),
                            fs_hz=1000.0, layout=layout, labels=np.zeros(n, dtype=np.int16), gesture_names=("a", "b"))
                  for n in (1500, 700)]  # fmt: skip
    preprocessing = PreprocessingConfig(fs_hz=1000.0)
    reference = AlignmentReference.from_recordings(recordings, preprocessing)
    filtered = np.concatenate([filter_recording(r.samples, preprocessing) for r in recordings])
    expected = AlignmentReference.from_filtered(filtered, 1000.0)
    np.testing.assert_allclose(reference.activity_uv, expected.activity_uv, rtol=1e-12)
    assert reference.seconds == expected.seconds == 2.2
    with pytest.raises(ConfigError):
        AlignmentReference.from_recordings([], preprocessing)
    with pytest.raises(ConfigError, match="2000.0 Hz"):
        AlignmentReference.from_recordings(recordings, PreprocessingConfig(fs_hz=2000.0))


def test_reference_of_several_subjects_keeps_each_subjects_map_and_round_trips() -> None:
    layout = grid_layout(1, 2, 2)
    rng = np.random.default_rng(0)
    preprocessing = PreprocessingConfig(fs_hz=1000.0)

    def rec(subject: str, n: int, scale: list[float]) -> Recording:
        return Recording(samples=(rng.standard_normal((n, 4)) * scale).astype(np.float32), fs_hz=1000.0,
                         layout=layout, labels=np.zeros(n, dtype=np.int16), gesture_names=("a", "b"), subject=subject)

    recordings = [rec("s2", 900, [4.0, 1.0, 1.0, 1.0]), rec("s1", 1500, [1.0, 1.0, 1.0, 4.0]),
                  rec("s2", 600, [4.0, 1.0, 1.0, 1.0])]  # fmt: skip
    reference = AlignmentReference.from_recordings(recordings, preprocessing)
    assert [name for name, _ in reference.maps()] == ["pooled", "s1", "s2"]
    pooled = AlignmentReference.from_filtered(
        np.concatenate([filter_recording(r.samples, preprocessing) for r in recordings]), 1000.0)
    np.testing.assert_allclose(reference.activity_uv, pooled.activity_uv, rtol=1e-12)
    assert reference.seconds == pooled.seconds == 3.0
    for name, activity in reference.groups:
        alone = AlignmentReference.from_recordings([r for r in recordings if r.subject == name], preprocessing)
        assert alone.groups == ()  # one subject: the pooled map is its map
        np.testing.assert_allclose(activity, alone.activity_uv, rtol=1e-12)
    assert np.argmax(reference.groups[0][1]) == 3 and np.argmax(reference.groups[1][1]) == 0
    assert AlignmentReference.from_dict(reference.to_dict()) == reference
    old = {"method": "mav_map", "activity_uv": [1.0, 2.0, 3.0, 0.0], "seconds": 1.0}  # written before groups
    assert AlignmentReference.from_dict(old).groups == () and AlignmentReference.from_dict(old).to_dict() == old
    with pytest.raises(ConfigError, match="'s1' has 3 channels"):
        AlignmentReference.from_dict({**old, "groups": [{"name": "s1", "activity_uv": [1.0, 2.0, 3.0]}]})
    with pytest.raises(ConfigError, match="distinct"):
        AlignmentReference((1.0, 2.0), groups=(("pooled", (1.0, 2.0)),))


def test_estimate_matches_the_subjects_own_map_where_the_pooled_map_falls_short() -> None:
    """Two subjects with different patterns: a shifted donning of one matches the pooled map poorly
    (and at a wrong shift), its own subject's map at the true one."""
    layout = grid_layout(1, 8, 8)
    a = _blob_map(layout, [(1.5, 2.0, 30.0), (6.0, 6.0, 6.0)], width=1.5)
    b = _blob_map(layout, [(5.5, 1.0, 30.0), (2.0, 6.0, 20.0)], width=1.5)
    pooled = (a + b) / 2
    truth = GridShift(rows=1.5, cols=1.0, gain=1.3)
    new = resampling_matrix(layout, truth, include_gain=True) @ a
    new *= np.exp(np.random.default_rng(2).normal(0, 0.03, size=new.size))
    alone = estimate_shift(AlignmentReference(tuple(pooled.tolist())), new, layout)
    assert alone.score < 0.9 and alone.reference == "pooled"
    groups = (("a", tuple(a.tolist())), ("b", tuple(b.tolist())))
    estimate = estimate_shift(AlignmentReference(tuple(pooled.tolist()), groups=groups), new, layout)
    assert estimate.reference == "a" and estimate.score > 0.99 and estimate.to_dict()["reference"] == "a"
    assert (estimate.shift.rows, estimate.shift.cols, estimate.shift.gain) == pytest.approx((1.5, 1.0, 1.3), abs=0.05)
    # Every map moved alike: the moved reference sees the donning unshifted, against its own map again.
    moved = AlignmentReference(tuple(pooled.tolist()), groups=groups).moved(resampling_matrix(layout, truth))
    again = estimate_shift(moved, new, layout)
    assert again.reference == "a" and not again.moved


def test_another_maps_shift_must_beat_the_best_unshifted_map_by_the_margin() -> None:
    """A map of another placement, moved, can match a little better than the donning's own map unmoved (it
    is noise-free here); more maps must not turn that into a shift: the margin holds across maps."""
    layout = grid_layout(1, 8, 8)
    new = _blob_map(layout, [(4.0, 2.0, 30.0), (5.0, 6.0, 12.0)], width=1.5)
    own = new * np.exp(np.random.default_rng(3).normal(0, 0.1, size=new.size))
    elsewhere = resampling_matrix(layout, GridShift(rows=2.0)) @ new
    reference = AlignmentReference(tuple(((own + elsewhere) / 2).tolist()),
                                   groups=(("a", tuple(own.tolist())), ("b", tuple(elsewhere.tolist()))))  # fmt: skip
    estimate = estimate_shift(reference, new, layout)
    assert not estimate.moved and estimate.reference == "a" and estimate.score > 0.98
    assert estimate.best == GridShift(rows=-2.0) and estimate.best_score is not None
    assert estimate.score < estimate.best_score < estimate.score + 0.05
    loose = estimate_shift(reference, new, layout, min_improvement=0.0)
    assert loose.moved and loose.reference == "b"


def test_layout_wraps_round_trip_is_backward_compatible() -> None:
    plain = grid_layout(1, 4, 4)
    assert "wraps" not in plain.to_dict()["grids"][0]  # stored layouts keep their exact JSON
    old = plain.to_dict()
    assert ElectrodeLayout.from_dict(old) == plain
    wrapped = _ramp_layout(wraps=(False, True))
    again = ElectrodeLayout.from_json(wrapped.to_json())
    assert again == wrapped and again.grids[0].wraps == (False, True)
    bad = wrapped.to_dict()
    bad["grids"][0]["wraps"] = [1, "yes"]
    with pytest.raises(LayoutError):
        ElectrodeLayout.from_dict(bad)


@pytest.mark.realdata
def test_flexemg_session3_is_session1_shifted_by_four_to_five_rows(flexemg_dir: Path) -> None:
    """MAV maps only: Session1Train against one unlabelled Session3Train trial, per subject."""
    from rohde.core.datasets import load_dataset
    from rohde.core.preprocessing import PreprocessingConfig, filter_recording

    preprocessing = PreprocessingConfig(fs_hz=1000.0, notch_hz=60.0)
    for subject in ("001", "002"):
        first = load_dataset(flexemg_dir / "data" / f"{subject}-Session1Train")[:4]
        reference = AlignmentReference.from_filtered(
            np.concatenate([filter_recording(r.samples, preprocessing) for r in first]), 1000.0
        )
        later = load_dataset(flexemg_dir / "data" / f"{subject}-Session3Train")[1]
        estimate = estimate_shift(reference, activity_map(filter_recording(later.samples, preprocessing)),
                                  later.layout)  # fmt: skip
        assert 4.0 <= estimate.shift.rows <= 5.0, estimate
        assert -2.0 <= estimate.shift.cols <= 0.0, estimate
        assert 1.1 <= estimate.shift.gain <= 2.3, estimate  # rest included, so below the gestures alone
        assert estimate.score > 0.9 and estimate.score_unshifted < 0.3, estimate


def test_live_alignment_estimates_after_warmup_applies_and_restarts() -> None:
    layout = flexemg_layout()
    reference = _blob_map(layout, [(3.0, 1.0, 30.0), (9.0, 2.5, 20.0), (13.0, 0.5, 12.0)])
    truth = GridShift(rows=3.0, cols=-1.0, gain=1.5)
    rng = np.random.default_rng(4)
    live = LiveAlignment(AlignmentReference(tuple(reference.tolist())), layout, fs_hz=100.0, warmup_s=2.0)
    scale = resampling_matrix(layout, truth, include_gain=True) @ reference * np.sqrt(np.pi / 2)  # MAV of a Gaussian
    assert live.push(rng.standard_normal((150, 64)) * scale) is None and live.state == "collecting"
    window = rng.standard_normal((64, 20)).astype(np.float32)
    assert live.align_window(window) is window  # nothing applied before the estimate
    estimate = live.push(rng.standard_normal((60, 64)) * scale)
    assert estimate is not None and live.state == "aligned"
    assert estimate.shift.rows == pytest.approx(3.0, abs=0.5) and estimate.shift.cols == pytest.approx(-1.0, abs=0.5)
    assert live.align_window(window).shape == (64, 20) and live.snapshot()["collected_s"] == 2.1
    assert live.push(np.ones((10, 64))) is None  # estimated once; more data changes nothing
    live.restart()
    assert live.state == "collecting" and live.matrix is None
    flat = LiveAlignment(AlignmentReference(tuple(reference.tolist())), layout, fs_hz=100.0, warmup_s=0.5)
    flat.push(rng.standard_normal((60, 64)))  # no pattern at all: too uncertain to apply
    assert flat.state == "rejected" and flat.matrix is None


def test_an_unmoved_map_snaps_to_no_shift_and_a_two_row_shift_is_still_found() -> None:
    layout = flexemg_layout()
    reference = _blob_map(layout, [(3.0, 1.0, 30.0), (9.0, 2.5, 20.0), (13.0, 0.5, 12.0)])
    rng = np.random.default_rng(2)
    # The same placement, another trial: another mix of gestures (one blob stronger, one weaker) and
    # every channel a little off, as two trials of one session are.
    same = 1.3 * _blob_map(layout, [(3.0, 1.0, 40.0), (9.0, 2.5, 14.0), (13.0, 0.5, 12.0)])
    same *= np.exp(rng.normal(0, 0.1, size=reference.size))
    estimate = estimate_shift(AlignmentReference(tuple(reference.tolist())), same, layout)
    assert (estimate.shift.rows, estimate.shift.cols, estimate.shift.rotation_deg) == (0.0, 0.0, 0.0)
    assert not estimate.moved and estimate.shift.gain == pytest.approx(1.3, rel=0.1)
    assert estimate.score == estimate.score_unshifted and estimate.best is not None
    assert np.allclose(alignment_matrix(layout, estimate, correct_gain=False), np.eye(layout.n_channels))
    # Without the margin the search does find a (meaningless) fractional shift in it.
    loose = estimate_shift(AlignmentReference(tuple(reference.tolist())), same, layout, min_improvement=0.0)
    assert loose.moved and loose.score > estimate.score
    assert estimate.best == GridShift(rows=loose.shift.rows, cols=loose.shift.cols)
    moved = resampling_matrix(layout, GridShift(rows=2.0)) @ same
    found = estimate_shift(AlignmentReference(tuple(reference.tolist())), moved, layout)
    assert found.moved and found.best is None
    assert found.shift.rows == pytest.approx(2.0, abs=0.26) and found.shift.cols == pytest.approx(0.0, abs=0.26)
    assert found.score > found.score_unshifted + 0.05
    with pytest.raises(ConfigError, match="min_improvement"):
        estimate_shift(AlignmentReference(tuple(reference.tolist())), same, layout, min_improvement=-1.0)


def test_normalised_windows_move_as_the_filtered_uv_samples_do() -> None:
    from rohde.core.alignment import normalized_matrix

    layout = _ramp_layout()
    rng = np.random.default_rng(5)
    matrix = resampling_matrix(layout, GridShift(rows=1.5, cols=-0.5, gain=1.4), include_gain=True)
    scale = rng.uniform(5.0, 30.0, layout.n_channels)
    window = rng.standard_normal((layout.n_channels, 40))  # (C, W) filtered uV
    moved_then_normalised = (matrix @ window) / scale[:, None]
    np.testing.assert_allclose(normalized_matrix(matrix, scale) @ (window / scale[:, None]), moved_then_normalised)
    with pytest.raises(ConfigError, match="scale_uv"):
        normalized_matrix(matrix, np.zeros(layout.n_channels))


def test_sites_not_known_are_left_out_of_the_score_and_the_gain() -> None:
    layout = flexemg_layout()
    reference = _blob_map(layout, [(3.0, 1.0, 30.0), (9.0, 2.5, 20.0), (13.0, 0.5, 12.0)])
    same = 1.3 * reference
    rows = np.array([e["row"] for e in sorted(layout.channel_map(), key=lambda e: e["channel"])])
    spoilt = np.where(rows >= 12, 40.0 * same, same)  # the last four rows disturbed while measured
    ref = AlignmentReference(tuple(reference.tolist()))
    fooled = estimate_shift(ref, spoilt, layout)
    assert fooled.moved or fooled.shift.gain > 2.0
    found = estimate_shift(ref, spoilt, layout, known=rows < 12)
    assert not found.moved and found.shift.gain == pytest.approx(1.3, rel=1e-6) and found.score > 0.99
    with pytest.raises(ConfigError, match="known"):
        estimate_shift(ref, spoilt, layout, known=np.ones(3, dtype=bool))
