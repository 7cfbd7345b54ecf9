"""Decision smoothing: majority vote over the last k windows, confidence rejection, parameter checks."""

from __future__ import annotations

import numpy as np
import pytest

from rohde.core.errors import ConfigError
from rohde.server.decisions import DecisionSmoother

pytestmark = pytest.mark.timeout(60)


def probs(index: int, confidence: float, n: int = 4) -> np.ndarray:
    p = np.full(n, (1 - confidence) / (n - 1))
    p[index] = confidence
    return p


def test_majority_vote_and_rejection() -> None:
    smoother = DecisionSmoother(k=3, confidence_threshold=0.6)
    assert smoother.update(probs(1, 0.9)).gesture_index == 1
    assert smoother.update(probs(2, 0.9)).gesture_index == 2  # tie 1:1 -> most recent
    d = smoother.update(probs(1, 0.9))
    assert (d.gesture_index, d.rejected) == (1, False)
    low = smoother.update(probs(3, 0.4))
    assert low.rejected and low.reject_reason == "low_confidence"
    assert low.window_index == 3 and low.gesture_index == 1  # a rejected window does not vote
    forced = smoother.update(probs(3, 0.95), input_reject_reason="nonfinite_input")
    assert forced.rejected and forced.reject_reason == "nonfinite_input"
    assert smoother.update(probs(2, 0.9)).gesture_index == 2  # history now 2, 1, 2


def test_smoother_validates_parameters() -> None:
    with pytest.raises(ConfigError, match="vote k"):
        DecisionSmoother(k=0, confidence_threshold=0.5)
    with pytest.raises(ConfigError, match="confidence_threshold"):
        DecisionSmoother(k=3, confidence_threshold=1.5)
