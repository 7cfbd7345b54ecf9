"""Decision smoothing: majority vote over the last k windows and confidence rejection."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from rohde.core.errors import ConfigError

# Input rejected for these reasons is garbage, not a weak signal: the votes cast before it describe a
# signal that may be gone (an electrode that slipped, an amplifier that overflowed), so the smoother
# forgets them instead of letting them outvote the windows that follow.
HISTORY_RESET_REASONS = frozenset({"nonfinite_input", "out_of_range_input", "nonfinite_output"})


@dataclass(frozen=True)
class Decision:
    gesture_index: int  # smoothed class (majority of the last k accepted windows)
    window_index: int  # this window's own top class (0 when the model output was not finite)
    confidence: float  # this window's top probability, always finite (0.0 when the output was not)
    rejected: bool
    reject_reason: str | None
    probabilities: tuple[float, ...]  # (n_classes,) the window's probabilities, all finite (zeros if not)


class DecisionSmoother:
    """Per-stream smoother; feed it one probability vector per window, in order.

    A window whose top probability is below `confidence_threshold` (or that the caller rejects for
    its input quality) is rejected and does not vote. A window whose probabilities are not all finite
    is rejected as `nonfinite_output` and published as zeros with confidence 0.0, since a NaN would
    pass no threshold test correctly and cannot be published. Input rejected as non-finite or out of
    range, and non-finite output, also clear the vote history. The decision is the most frequent
    class among the last `k` accepted windows; ties go to the most recent of the tied classes.
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
        probabilities = np.asarray(probabilities, dtype=np.float64)
        reason = input_reject_reason
        if np.isfinite(probabilities).all():
            window_index = int(np.argmax(probabilities))
            confidence = float(probabilities[window_index])
            published = tuple(float(p) for p in probabilities)
        else:
            window_index, confidence = 0, 0.0
            published = (0.0,) * probabilities.shape[0]
            reason = reason or "nonfinite_output"
        if reason is None and confidence < self.confidence_threshold:
            reason = "low_confidence"
        if reason in HISTORY_RESET_REASONS:
            self._history.clear()
        if reason is None:
            self._history.append(window_index)
        return Decision(
            gesture_index=self._vote(window_index),
            window_index=window_index,
            confidence=confidence,
            rejected=reason is not None,
            reject_reason=reason,
            probabilities=published,
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
