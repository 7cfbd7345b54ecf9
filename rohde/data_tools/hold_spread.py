"""How much the holds of one gesture differ from each other, in any labelled recording set.

A classifier of held gestures mostly errs on whole holds whose spatial pattern drifts towards
another gesture's, so this spread (not window noise) bounds what a model can reach. It is the
figure that calibrates the simulator's per-hold variability against real recordings.

One hold = one contiguous run of a non-rest label. Its pattern is the log RMS per channel of the
filtered signal over the run, minus its mean over channels (so overall effort drops out). Per
group of holds (one subject and session):

- `corr_to_mean`: median correlation of a hold's pattern with the mean of the other holds of its
  gesture (leave-one-out);
- `dispersion`: RMS distance of the holds to their gesture's mean (corrected for the number of
  holds), over the mean distance between gesture means;
- `nearest_mean_accuracy`: share of holds nearer to their own gesture's leave-one-out mean than
  to any other gesture's mean.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.errors import ConfigError, RecordingFormatError
from rohde.core.gestures import REST_GESTURES
from rohde.core.preprocessing import PreprocessingConfig, filter_recording
from rohde.core.recording import Recording
from rohde.data_tools.inputs import default_preprocessing, load_recording, peek_condition


@dataclass(frozen=True)
class HoldSpread:
    """Spread of the holds of one group (see the module docstring)."""

    n_holds: int
    n_gestures: int
    corr_to_mean: float
    dispersion: float
    nearest_mean_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hold_patterns(
    recording: Recording, preprocessing: PreprocessingConfig, *, min_hold_s: float = 0.3
) -> list[tuple[int, np.ndarray]]:
    """`(label, pattern (n_channels,))` of every hold of at least `min_hold_s` in `recording`."""
    filtered = filter_recording(recording.samples, preprocessing)
    rest = {i for i, name in enumerate(recording.gesture_names) if name.lower() in REST_GESTURES}
    labels = recording.labels.astype(np.int64)
    edges = np.flatnonzero(np.diff(labels) != 0) + 1
    starts, ends = np.r_[0, edges], np.r_[edges, labels.size]
    min_samples = min_hold_s * recording.fs_hz
    patterns: list[tuple[int, np.ndarray]] = []
    for start, end in zip(starts, ends, strict=True):
        label = int(labels[start])
        if label < 0 or label in rest or end - start < min_samples:
            continue
        rms = np.sqrt(np.mean(np.square(filtered[start:end], dtype=np.float64), axis=0)) + 1e-6
        pattern = np.log(rms)
        patterns.append((label, pattern - pattern.mean()))
    return patterns


def hold_spread(patterns: list[tuple[int, np.ndarray]]) -> HoldSpread:
    """The spread of a group of hold patterns; needs two gestures with at least two holds each."""
    labels = np.array([label for label, _ in patterns])
    gestures = [g for g in np.unique(labels) if int(np.sum(labels == g)) >= 2]
    if len(gestures) < 2:
        raise ConfigError(
            f"Hold spread needs at least two gestures with two holds or more each; got {len(patterns)} holds "
            f"of {len(np.unique(labels))} gestures. Pass a whole session (several trials)."
        )
    keep = np.isin(labels, gestures)
    labels = labels[keep]
    x = np.stack([pattern for _, pattern in patterns])[keep]  # (n_holds, n_channels)
    means = {g: x[labels == g].mean(axis=0) for g in gestures}
    between = [np.linalg.norm(means[a] - means[b]) for i, a in enumerate(gestures) for b in gestures[i + 1 :]]
    within_sq, correlations, nearest_own = [], [], 0
    for g in gestures:
        members = x[labels == g]
        n = len(members)
        within_sq.extend(np.sum((members - means[g]) ** 2, axis=1) * n / (n - 1))
        for pattern in members:
            loo_mean = (means[g] * n - pattern) / (n - 1)
            correlations.append(np.corrcoef(pattern, loo_mean)[0, 1])
            other = min(np.linalg.norm(pattern - means[h]) for h in gestures if h != g)
            nearest_own += int(np.linalg.norm(pattern - loo_mean) < other)
    return HoldSpread(
        n_holds=int(len(labels)),
        n_gestures=len(gestures),
        corr_to_mean=float(np.median(correlations)),
        dispersion=float(np.sqrt(np.mean(within_sq)) / np.mean(between)),
        nearest_mean_accuracy=nearest_own / len(labels),
    )


def hold_spreads(paths: Sequence[Path], *, layout: str | None = None) -> dict[str, HoldSpread]:
    """The hold spread of the clean recordings of each subject and session, keyed `subject/session`."""
    groups: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for path in paths:
        if peek_condition(path) != "clean":  # skip disturbed trials without loading their samples
            continue
        recording = load_recording(path, layout=layout)
        key = f"{recording.subject}/{recording.session}"
        groups[key].extend(hold_patterns(recording, default_preprocessing(recording)))
    if not groups:
        raise RecordingFormatError("No clean recordings found; the hold spread is measured on clean holds.")
    return {key: hold_spread(groups[key]) for key in sorted(groups)}


def format_hold_spreads(spreads: Mapping[str, HoldSpread]) -> str:
    """One row per group, then what each column means."""
    lines = [f"{'subject/session':<24}{'holds':>6}{'gestures':>9}{'corr':>8}{'dispersion':>11}{'nearest':>9}"]
    for key, v in spreads.items():
        lines.append(
            f"{key:<24}{v.n_holds:>6}{v.n_gestures:>9}{v.corr_to_mean:>8.3f}{v.dispersion:>11.3f}"
            f"{v.nearest_mean_accuracy:>9.3f}"
        )
    lines.append(
        "corr: median correlation of a hold's pattern with its gesture's mean; dispersion: spread of the holds "
        "over the distance between gestures; nearest: holds nearer their own gesture's mean than any other."
    )
    return "\n".join(lines)
