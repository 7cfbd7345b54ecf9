"""The LDA baseline's hold-out rule within one folder."""

from __future__ import annotations

import numpy as np
import pytest

from rohde.core.errors import ConfigError
from rohde.data_tools.baseline import RecordingFeatures, baseline_split


def _features(trial: str, condition: str = "clean") -> RecordingFeatures:
    return RecordingFeatures("s01", ("sess1", trial), condition, np.zeros((2, 3)), np.zeros(2), ("a", "b"))


def test_the_last_third_of_clean_trials_is_held_out_in_natural_order() -> None:
    items = [_features(str(t)) for t in range(1, 11)] + [_features("10", "CA"), _features("2", "LC")]
    train, test = baseline_split(items)
    # Trials 8, 9 and 10 (numerically last, not "9" after "10") and the CA trial of 10 are tested.
    assert sorted((f.key[1], f.condition) for f in test) == [("10", "CA"), ("10", "clean"), ("8", "clean"),
                                                              ("9", "clean")]  # fmt: skip
    # The LC trial shares training trial 2's EMG: it is neither trained on nor tested.
    assert [f.key[1] for f in train] == [str(t) for t in range(1, 8)]


def test_one_clean_trial_is_too_few() -> None:
    with pytest.raises(ConfigError, match="at least two"):
        baseline_split([_features("1"), _features("1", "CA")])
