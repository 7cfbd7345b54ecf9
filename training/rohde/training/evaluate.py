"""Scores per condition: accuracy, macro-F1, confusion matrix, accuracy against majority votes.

Only valid windows (no unusable sample inside) are scored. Majority voting runs over the stream
of decisions of one recording in time order, as the server's smoothing does: the decision at a
window is the most frequent class among the last `k` window decisions (the latest wins ties).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.errors import ConfigError
from rohde.core.recording import Recording
from rohde.training.windows_dataset import WindowSet, build_window_set

logger = logging.getLogger(__name__)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """`(n_classes, n_classes)` counts, rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes present in the truth or the predictions."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    present = (support + predicted) > 0
    f1 = np.where(present, 2 * tp / np.maximum(support + predicted, 1), 0.0)
    return float(f1[present].mean()) if present.any() else 0.0


def majority_vote(pred: np.ndarray, recording_ids: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """Decision per window = most frequent of the last `k` decisions of the same recording."""
    if k < 1:
        raise ConfigError(f"The number of votes must be >= 1, got {k}.")
    if k == 1:
        return pred.copy()
    out = np.empty_like(pred)
    for rid in np.unique(recording_ids):
        idx = np.flatnonzero(recording_ids == rid)
        p = pred[idx]
        onehot = np.eye(n_classes, dtype=np.int64)[p]  # (n, K)
        csum = np.vstack([np.zeros((1, n_classes), dtype=np.int64), np.cumsum(onehot, axis=0)])
        n = len(p)
        lo = np.maximum(np.arange(n) + 1 - k, 0)
        counts = csum[1:] - csum[lo]  # (n, K) votes in the last k decisions
        # Ties go to the latest decision: give it half a vote extra.
        scores = counts * 2 + onehot
        out[idx] = scores.argmax(axis=1)
    return out


def score(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    cm = confusion_matrix(y_true, y_pred, len(labels))
    return {
        "n_windows": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
        "macro_f1": macro_f1(cm),
        "confusion": cm.tolist(),
    }


def evaluate_probabilities(
    probs: np.ndarray,
    windows: WindowSet,
    *,
    labels: Sequence[str],
    max_votes: int = 10,
) -> dict[str, dict[str, Any]]:
    """Per condition of the test recordings: scores of single decisions and accuracy vs votes."""
    if len(probs) != len(windows):
        raise ConfigError(f"{len(probs)} probability rows for {len(windows)} windows.")
    pred = probs.argmax(axis=1)
    voted = {k: majority_vote(pred, windows.recording_ids, k, len(labels)) for k in range(1, max_votes + 1)}
    conditions = np.asarray(windows.conditions)[windows.recording_ids]
    results: dict[str, dict[str, Any]] = {}
    for condition in sorted(set(windows.conditions), key=_condition_order):
        mask = (conditions == condition) & windows.valid
        y = windows.labels[mask]
        entry = score(y, pred[mask], labels)
        entry["accuracy_vs_votes"] = {str(k): float(np.mean(v[mask] == y)) for k, v in voted.items()}
        results[condition] = entry
    return results


def _condition_order(condition: str) -> tuple[int, str]:
    order = {"clean": 0, "CA": 1, "LC": 2}
    return order.get(condition, 99), condition


def evaluate_package(
    model_dir: str | Path,
    recordings: Sequence[Recording],
    *,
    max_votes: int = 10,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    as_served: bool = True,
) -> dict[str, dict[str, Any]]:
    """Score an exported package on recordings with ONNX Runtime, through the shared preprocessing.

    `as_served`: a package trained with quality masking gets the channels the server's quality monitor
    would flag rebuilt in each window, as the server does before its model (`iter_windows(rebuild_bad=)`);
    packages without it are scored on their windows unchanged either way."""
    import onnxruntime as ort

    from rohde.core.channel_repair import QUALITY_MASKING_KEY
    from rohde.core.model_package import check_recording_fits, load_model_package

    package = load_model_package(model_dir)
    meta = package.metadata
    for rec in recordings:
        check_recording_fits(meta, rec)
    session = ort.InferenceSession(str(package.onnx_path), providers=list(providers))

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([meta.output_name], {meta.input_name: x})[0])

    windows = build_window_set(
        recordings,
        preprocessing=package.preprocessing,
        normalization=package.normalization,
        windows=package.windows,
        featurize=run,
        rebuild_bad=as_served and bool(meta.training_data.get(QUALITY_MASKING_KEY, False)),
    )
    return evaluate_probabilities(windows.features, windows, labels=meta.labels, max_votes=max_votes)
