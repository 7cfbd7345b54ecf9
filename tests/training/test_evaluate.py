from __future__ import annotations

import numpy as np

from rohde.training.evaluate import confusion_matrix, evaluate_probabilities, macro_f1, majority_vote
from rohde.training.windows_dataset import WindowSet


def test_confusion_and_macro_f1() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    cm = confusion_matrix(y, p, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    f1 = [2 * 1 / (2 + 2), 2 * 2 / (2 + 3), 2 * 1 / (2 + 1)]
    assert abs(macro_f1(cm) - np.mean(f1)) < 1e-12


def test_majority_vote_stays_within_a_recording_and_latest_wins_ties() -> None:
    pred = np.array([0, 1, 1, 0, 2, 2, 2])
    rec = np.array([0, 0, 0, 0, 1, 1, 1])
    assert majority_vote(pred, rec, 1, 3).tolist() == pred.tolist()
    assert majority_vote(pred, rec, 3, 3).tolist() == [0, 1, 1, 1, 2, 2, 2]
    assert majority_vote(pred, rec, 2, 3).tolist() == [0, 1, 1, 0, 2, 2, 2]


def test_evaluate_per_condition_scores_only_valid_windows() -> None:
    ws = WindowSet(
        features=np.zeros((6, 1), dtype=np.float32),
        td=None,
        labels=np.array([0, 1, 1, 0, 1, 1]),
        valid=np.array([True, True, False, True, True, True]),
        recording_ids=np.array([0, 0, 0, 1, 1, 1]),
        conditions=["clean", "CA"],
    )
    probs = np.eye(2)[[0, 1, 0, 0, 0, 1]]
    result = evaluate_probabilities(probs, ws, labels=["a", "b"], max_votes=2)
    assert list(result) == ["clean", "CA"]
    assert result["clean"]["accuracy"] == 1.0 and result["clean"]["n_windows"] == 2
    assert abs(result["CA"]["accuracy"] - 2 / 3) < 1e-12
    assert set(result["CA"]["accuracy_vs_votes"]) == {"1", "2"}
