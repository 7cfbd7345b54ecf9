from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from rohde.training.config import TrainerConfig
from rohde.training.trainer import predict_proba, train_classifier


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 300)
    x = rng.standard_normal((300, 4)).astype(np.float32) + 3 * np.eye(3, 4, dtype=np.float32)[y]
    return x, y


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))


def test_learns_a_separable_problem_and_keeps_the_best_epoch(tmp_path: Path) -> None:
    model = _model()
    config = TrainerConfig(max_epochs=15, batch_size=32, patience=5, device="cpu")
    result = train_classifier(model, _data(0), _data(1), config=config, checkpoint_path=tmp_path / "c.pt")
    assert result.best_val_accuracy > 0.9
    assert 1 <= result.best_epoch <= result.epochs_run
    assert predict_proba(model, _data(2)[0], device="cpu").shape == (300, 3)
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    assert {"model", "optimizer", "config", "step", "epoch"} <= set(ckpt)


def test_resume_continues_to_the_same_weights(tmp_path: Path) -> None:
    full = _model()
    config = TrainerConfig(max_epochs=6, batch_size=32, patience=100, device="cpu")
    train_classifier(full, _data(0), _data(1), config=config, seed=3)

    ckpt = tmp_path / "resume.pt"
    part = _model()
    train_classifier(part, _data(0), _data(1), config=TrainerConfig(max_epochs=3, batch_size=32, patience=100,
                     device="cpu"), seed=3, checkpoint_path=ckpt)  # fmt: skip
    resumed = _model()
    result = train_classifier(resumed, _data(0), _data(1), config=config, seed=3, checkpoint_path=ckpt, resume=True)
    assert result.epochs_run == 6
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
