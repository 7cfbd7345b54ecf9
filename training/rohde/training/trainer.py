"""Supervised training loop: seeded, validation-selected, early-stopped, resumable.

Works for any classifier module and input tensor: the pipeline trains the grid head on cached
filter-bank features (the frontend is frozen), or a whole `RohdeCNN` on raw windows.

A checkpoint holds the model, the optimiser, the trainer config, the step and epoch, the best
weights so far and the shuffling generator, so `resume=True` continues where training stopped.
It is loaded with `weights_only=True` (tensors and plain values only, no arbitrary pickle).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rohde.core.errors import ConfigError
from rohde.training.config import TrainerConfig
from rohde.training.distributed import (
    World,
    broadcast_from_main,
    current_world,
    global_batch_layers,
    require_same_on_all_ranks,
    sum_gradients,
    sum_over_ranks,
)

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - third-party code may still use the global state


@dataclass
class TrainResult:
    best_epoch: int  # 1-based epoch whose weights were kept
    best_val_accuracy: float
    best_val_loss: float
    epochs_run: int
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, device: torch.device, world: World
) -> tuple[float, float]:
    n_all = len(y)
    rows = world.shard(n_all)  # every rank scores its share; one process scores all
    x, y = x[rows], y[rows]
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y), batch):
            xb, yb = x[start : start + batch].to(device), y[start : start + batch].to(device)
            logits = model(xb)
            total_loss += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(dim=1) == yb).sum())
    if world.parallel:
        summed = sum_over_ranks(torch.tensor([total_loss, correct], dtype=torch.float64))
        total_loss, correct = float(summed[0]), int(summed[1])
    return total_loss / max(1, n_all), correct / max(1, n_all)


def _parallel_step(
    model: nn.Module,
    params: list[nn.Parameter],
    optimiser: torch.optim.Optimizer,
    rows: tuple[torch.Tensor, torch.Tensor],
    *,
    n_global: int,
    label_smoothing: float,
) -> float:
    """One step on this rank's rows of a global batch of `n_global`; returns the share's summed loss."""
    xb, yb = rows
    optimiser.zero_grad(set_to_none=True)
    # The shares of the batch's mean loss sum to it, so the summed gradients are the whole batch's.
    loss = nn.functional.cross_entropy(model(xb), yb, label_smoothing=label_smoothing, reduction="sum") / n_global
    loss.backward()
    sum_gradients(params)
    optimiser.step()
    return float(loss.detach()) * n_global


def train_classifier(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    config: TrainerConfig,
    seed: int = 0,
    checkpoint_path: Path | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train `model` in place on `train` = (inputs, int labels); keep the weights best on `val`.

    Selection uses validation accuracy (ties broken by validation loss); training stops after
    `config.patience` epochs without improvement. `meta` is stored in the checkpoint as is.
    Under torchrun (`rohde.training.distributed`) each rank trains on its share of every batch of
    `config.batch_size` and only rank 0 writes the checkpoint; a last batch with fewer windows than
    processes is skipped (one process skips only a last batch of one window).
    """
    x_train, y_train = train
    x_val, y_val = val
    if len(y_train) == 0 or len(y_val) == 0:
        raise ConfigError(f"{desc}: training and validation sets must both be non-empty.")
    world = current_world()
    world.per_rank_batch(config.batch_size, "trainer.batch_size")
    seed_everything(seed)
    device = resolve_device(config.device)
    model.to(device)
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    yt = torch.as_tensor(y_train, dtype=torch.int64)
    xv = torch.as_tensor(x_val, dtype=torch.float32)
    yv = torch.as_tensor(y_val, dtype=torch.int64)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    generator = torch.Generator().manual_seed(seed)
    if world.parallel:
        broadcast_from_main(model)

    epoch, step, bad_epochs = 0, 0, 0
    best_score: tuple[float, float] = (-1.0, float("inf"))
    best_epoch = 0
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    if resume and checkpoint_path is not None and checkpoint_path.is_file():
        ckpt = torch.load(checkpoint_path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimiser.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        epoch, step, bad_epochs = int(ckpt["epoch"]), int(ckpt["step"]), int(ckpt["bad_epochs"])
        best_score = (float(ckpt["best_accuracy"]), float(ckpt["best_loss"]))
        best_epoch = int(ckpt["best_epoch"])
        best_state = ckpt["best_model"]
        history = list(ckpt["history"])
        logger.info("%s: resumed from %s at epoch %s", desc, checkpoint_path, epoch)
    if world.parallel:
        require_same_on_all_ranks(step, f"{desc}'s resumed step")

    started = time.perf_counter()
    with global_batch_layers(model, world) as global_batch:  # patches nothing in one process
        while epoch < config.max_epochs and bad_epochs < config.patience:
            model.train()
            order = torch.randperm(len(yt), generator=generator)
            running = 0.0
            for start in range(0, len(order), config.batch_size):
                idx = order[start : start + config.batch_size]
                if len(idx) < max(2, world.size):  # batch norm needs two samples, every rank one
                    continue
                if world.parallel:
                    mine = idx[global_batch.set(len(idx))]
                    share = (xt[mine].to(device), yt[mine].to(device))
                    running += _parallel_step(model, params, optimiser, share, n_global=len(idx),
                                              label_smoothing=config.label_smoothing)  # fmt: skip
                    step += 1
                    continue
                xb, yb = xt[idx].to(device), yt[idx].to(device)
                optimiser.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()
                optimiser.step()
                running += float(loss.detach()) * len(idx)
                step += 1
            if world.parallel:
                running = float(sum_over_ranks(torch.tensor([running], dtype=torch.float64))[0])
            epoch += 1
            val_loss, val_acc = _evaluate(model, xv, yv, 4 * config.batch_size, device, world)
            history.append({"epoch": epoch, "train_loss": running / len(yt), "val_loss": val_loss,
                            "val_accuracy": val_acc})  # fmt: skip
            if (val_acc, -val_loss) > (best_score[0], -best_score[1]):
                best_score, best_epoch, bad_epochs = (val_acc, val_loss), epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
            logger.debug("%s epoch %s: train loss %.4f, val loss %.4f, val acc %.4f", desc, epoch,
                         running / len(yt), val_loss, val_acc)
            if checkpoint_path is not None and world.is_main:
                checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimiser.state_dict(),
                        "generator": generator.get_state(),
                        "config": asdict(config),
                        "meta": meta or {},
                        "epoch": epoch,
                        "step": step,
                        "bad_epochs": bad_epochs,
                        "best_accuracy": best_score[0],
                        "best_loss": best_score[1],
                        "best_epoch": best_epoch,
                        "best_model": best_state,
                        "history": history,
                    },
                    checkpoint_path,
                )
    model.load_state_dict(best_state)
    model.eval()
    seconds = time.perf_counter() - started
    logger.info("%s: %s epochs in %.1f s, best epoch %s (val acc %.4f)", desc, epoch, seconds, best_epoch,
                best_score[0])
    return TrainResult(best_epoch, best_score[0], best_score[1], epoch, step, seconds, history)


def predict_proba(model: nn.Module, x: np.ndarray, *, batch: int = 1024, device: str = "auto") -> np.ndarray:
    """Softmax probabilities `(N, K)` of `model` on inputs `x`."""
    dev = resolve_device(device)
    model.to(dev).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xb = torch.as_tensor(x[start : start + batch], dtype=torch.float32, device=dev)
            out.append(torch.softmax(model(xb), dim=-1).cpu().numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)
