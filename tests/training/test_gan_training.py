"""The GAN stage's cut of each seen disturbed trial into a training part and a held-out end."""

from __future__ import annotations

import numpy as np

from rohde.training.gan_training import time_split
from tests.training.conftest import small_recordings


def test_time_split_cuts_samples_labels_and_mask_at_one_point() -> None:
    rec = next(r for r in small_recordings() if r.condition == "LC")
    first, last = time_split(rec, 0.25)
    assert first.n_samples == round(rec.n_samples * 0.75) and first.n_samples + last.n_samples == rec.n_samples
    np.testing.assert_array_equal(np.concatenate([first.samples, last.samples]), rec.samples)
    np.testing.assert_array_equal(np.concatenate([first.labels, last.labels]), rec.labels)
    assert rec.disturbance_mask is not None and first.disturbance_mask is not None
    assert last.disturbance_mask is not None
    np.testing.assert_array_equal(np.concatenate([first.disturbance_mask, last.disturbance_mask]),
                                  rec.disturbance_mask)  # fmt: skip
