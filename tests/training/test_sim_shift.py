"""Re-donnings of the simulated-shift check: one shift per subject and session, and the server's
label-free alignment estimated on an unlabelled trial and applied to the scored ones."""

from __future__ import annotations

import numpy as np

from rohde.core.alignment import AlignmentReference, GridShift
from rohde.core.layouts import grid_layout
from rohde.core.preprocessing import PreprocessingConfig, filter_recording
from rohde.core.recording import Recording
from rohde.simulation.electrode_shift import ShiftRange
from rohde.training.cross_day import Donning, align_recordings, don, donning_alignment, draw_donnings

LAYOUT = grid_layout(1, 8, 8, order="row")
PREPROCESSING = PreprocessingConfig(fs_hz=1000.0, notch_hz=60.0)


def _recording(amplitude: np.ndarray, seed: int) -> Recording:
    samples = np.random.default_rng(seed).standard_normal((4000, amplitude.size)) * amplitude
    return Recording(samples.astype(np.float32), 1000.0, LAYOUT, np.zeros(4000, np.int16), ("rest",))


def _blob() -> np.ndarray:
    r, c = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    return (5.0 + 60.0 * np.exp(-((r - 3.0) ** 2 + (c - 4.0) ** 2) / 4.0)).ravel()  # row-major = channel order


def test_every_trial_of_a_donning_gets_its_shift_and_channel_gains() -> None:
    spread = ShiftRange(max_rows=2.0, max_cols=2.0, gain_range=(0.8, 1.25), channel_gain_spread=0.1)
    donnings = draw_donnings(["s01", "s02"], "sess3", count=3, shift_range=spread, seed=0)
    assert len(donnings) == 6 and len({d.shift for d in donnings}) == 6  # independent draws
    assert [d.subject for d in donnings] == ["s01"] * 3 + ["s02"] * 3
    assert all(abs(d.shift.rows) <= 2 and abs(d.shift.cols) <= 2 and 0.8 <= d.shift.gain <= 1.25 for d in donnings)
    assert draw_donnings(["s01", "s02"], "sess3", count=3, shift_range=spread, seed=0) == donnings
    assert {d.shift for d in draw_donnings(["s01"], "sess2", count=3, shift_range=spread, seed=0)}.isdisjoint(
        {d.shift for d in donnings}
    )
    trials = [_recording(_blob(), seed) for seed in (1, 2)]
    first, second = don(trials, donnings[0])
    truth = first.provenance["electrode_shift"]
    assert truth == second.provenance["electrode_shift"] and len(truth["channel_gain"]) == 64
    assert don(trials[:1], donnings[1])[0].provenance["electrode_shift"]["channel_gain"] != truth["channel_gain"]


def test_alignment_is_estimated_on_the_unlabelled_trial_and_applied_to_the_scored_ones() -> None:
    reference = AlignmentReference.from_filtered(filter_recording(_recording(_blob(), 3).samples, PREPROCESSING), 1e3)
    donning = Donning("s01", "sess3", 0, GridShift(rows=2.0, cols=-1.0, gain=1.5), seed=0)
    unlabelled = don([_recording(_blob(), 4)], donning)
    # A scored trial without any spatial pattern: an estimate made on it could not find the shift.
    scored = don([_recording(np.full(64, 20.0), 5)], donning)
    alignment, estimate = donning_alignment(reference, unlabelled, PREPROCESSING, min_score=0.9)
    assert (estimate.shift.rows, estimate.shift.cols) == (2.0, -1.0) and abs(estimate.shift.gain - 1.5) < 0.15
    assert alignment is not None
    served = (scored[0].samples.astype(np.float64) @ alignment.T).astype(np.float32)
    np.testing.assert_array_equal(served, align_recordings(scored, estimate)[0].samples)
    assert not np.allclose(served, scored[0].samples)
    # Under the server's score threshold the stream is served as it comes.
    kept, _ = donning_alignment(reference, unlabelled, PREPROCESSING, min_score=1.01)
    assert kept is None
