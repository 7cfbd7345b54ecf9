"""Decision smoothing: majority vote over the last k windows and confidence rejection."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from rohde.core.errors import ConfigError


@dataclass(frozen=True)
class Decision:
    gesture_index: int  # smoothed class (majority of the last k accepted windows)
    window_index: int  # this window's own top class
    confidence: float  # this window's top probability
    rejected: bool
    reject_reason: str | None


class DecisionSmoother:
    """Per-stream smoother; feed it one probability vector per window, in order.

    A window whose top probability is below `confidence_threshold` (or that the caller rejects for
    its input quality) is rejected and does not vote. The decision is the most frequent class among
    the last `k` accepted windows; ties go to the most recent of the tied classes.
    """

    def __init__(self, *, k: int, confidence_threshold: float) -> None:
        if k < 1:
            raise ConfigError(f"vote k must be >= 1, got {k}.")
        if not 0.0 <= confidence_threshold <= 1.0:
            raise ConfigError(f"confidence_threshold must lie in [0, 1], got {confidence_threshold}.")
        self.k = k
        self.confidence_threshold = confidence_threshold
        self._history: deque[int] = deque(maxlen=k)

    def reset(self) -> None:
        self._history.clear()

    def update(self, probabilities: np.ndarray, *, input_reject_reason: str | None = None) -> Decision:
        """`probabilities` is `(n_classes,)`; returns the smoothed decision for this window."""
        window_index = int(np.argmax(probabilities))
        confidence = float(probabilities[window_index])
        reason = input_reject_reason
        if reason is None and confidence < self.confidence_threshold:
            reason = "low_confidence"
        if reason is None:
            self._history.append(window_index)
        return Decision(
            gesture_index=self._vote(window_index),
            window_index=window_index,
            confidence=confidence,
            rejected=reason is not None,
            reject_reason=reason,
        )

    def _vote(self, fallback: int) -> int:
        if not self._history:
            return fallback
        counts: dict[int, int] = {}
        for label in self._history:
            counts[label] = counts.get(label, 0) + 1
        best = max(counts.values())
        for label in reversed(self._history):
            if counts[label] == best:
                return label
        return fallback
