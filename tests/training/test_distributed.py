"""Two CPU processes (gloo on loopback) train the classifier and the GAN as one process does.

The workers join the process group the way `rohde train` does under torchrun: torchrun's environment
variables (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT) and
`distributed_training`. Both runs use the same seed and the same global batch; the tolerance
covers the order of float additions only (gradients summed over ranks, batch-norm statistics of
two shares), so a wrong share, a missed all_reduce or a different random draw fails.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from rohde.core.errors import ConfigError
from rohde.core.layouts import grid_layout
from rohde.training.cnn import GridHead
from rohde.training.config import CNNConfig, TrainerConfig
from rohde.training.distributed import (
    World,
    distributed_training,
    init_distributed,
    require_same_json,
    resolve_backend,
)
from rohde.training.gan import train_disturbance_gan
from rohde.training.gan_models import GANConfig
from rohde.training.trainer import train_classifier
from tests.training.conftest import GAN_FS_HZ, GAN_REGIONS, disturbed_segments

WORLD_SIZE = 2
# Float32 sums in another order: measured differences are about 1e-7; 100 x that still fails on
# any real mistake (a wrong share moves parameters by about 1e-3 after one step).
ATOL = 1e-5
# A convolution right before batch norm has no true gradient for its bias (the norm subtracts the
# mean): Adam turns the float noise of that gradient (about 1e-9) into steps of the learning rate, in
# one process as in two, so these biases and the running mean that follows them drift apart by up to
# 2e-2 without changing what the model computes in training; the evaluation-mode logits, which
# carry what is left of them, are compared instead, within LOGITS_ATOL.
UNDETERMINED = ("convs.0.bias", "convs.1.running_mean")
LOGITS_ATOL = 5e-3
# 147 training windows in batches of 32: the last batch (19) splits unevenly into 10 + 9.
N_TRAIN, N_VAL, BATCH = 147, 40, 32
GAN_CONFIG = GANConfig.tiny()  # batch 8 (4 per rank), 4 generator steps of 5 critic steps each


def _classifier_data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 32, 2)).astype(np.float32)  # (N, channels, bands)
    x[np.arange(n), y * 8, :] += 2.0  # each class lights one electrode
    return x, y


def _train_both(gan_dir: Path) -> dict[str, Any]:
    """The classifier (batch norm, dropout) and the GAN, trained from fixed data and seeds."""
    torch.manual_seed(0)
    head = GridHead(layout=grid_layout(2, 4, 4), n_bands=2, n_classes=3,
                    config=CNNConfig(n_bands=2, conv_channels=(4,), hidden=16, dropout=0.2))  # fmt: skip
    config = TrainerConfig(max_epochs=3, batch_size=BATCH, patience=3, device="cpu")
    val = _classifier_data(1, N_VAL)
    result = train_classifier(head, _classifier_data(0, N_TRAIN), val, config=config, seed=5)
    with torch.no_grad():
        logits = head.eval()(torch.from_numpy(val[0]))
    segments = disturbed_segments(np.random.default_rng(0), 48, GAN_CONFIG.segment_samples(GAN_FS_HZ))
    gan = train_disturbance_gan(segments, fs_hz=GAN_FS_HZ, config=GAN_CONFIG, region_channels=GAN_REGIONS,
                                out_dir=gan_dir, seed=3)  # fmt: skip
    return {
        "classifier": {k: v.detach().clone() for k, v in head.state_dict().items() if k not in UNDETERMINED},
        "logits": logits,
        "history": result.history,
        "steps": result.steps,
        "generator": {k: v.detach().clone() for k, v in gan.generator.state_dict().items()},
    }


def _worker(rank: int, port: int, out: Path) -> None:
    """One rank, started as torchrun starts it: its environment, then the command's set-up."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD_SIZE),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo"})  # fmt: skip
    torch.set_num_threads(1)
    with distributed_training("gloo") as world:
        assert world == World(rank=rank, size=WORLD_SIZE, local_rank=rank)
        result = _train_both(out / f"gan_rank{rank}")
        require_same_json({"split": "same"}, "a value all ranks share")
        try:
            require_same_json({"split": rank}, "the data split")
        except ConfigError as exc:  # every rank must refuse, not only the one that differs
            result["refused"] = str(exc)
    torch.save(result, out / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _assert_close(parallel: dict[str, torch.Tensor], single: dict[str, torch.Tensor]) -> None:
    assert parallel.keys() == single.keys()
    for name, value in single.items():
        torch.testing.assert_close(parallel[name], value, atol=ATOL, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("distributed")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _train_both(out / "gan_single")
    finally:
        torch.set_num_threads(threads)
    mp.start_processes(_worker, args=(_free_port(), out), nprocs=WORLD_SIZE, join=True, start_method="spawn")
    return single, torch.load(out / "rank0.pt", weights_only=False), out


def test_classifier_on_two_processes_matches_one(runs: tuple[dict[str, Any], dict[str, Any], Path]) -> None:
    single, parallel, out = runs
    assert parallel["steps"] == single["steps"] == 3 * 5
    _assert_close(parallel["classifier"], single["classifier"])  # weights and batch-norm running statistics
    torch.testing.assert_close(parallel["logits"], single["logits"], atol=LOGITS_ATOL, rtol=0)
    for a, b in zip(parallel["history"], single["history"], strict=True):
        assert a["val_accuracy"] == b["val_accuracy"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=ATOL)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=LOGITS_ATOL)
    other = torch.load(out / "rank1.pt", weights_only=False)
    _assert_close(other["classifier"], parallel["classifier"])  # the ranks stay in step
    for result in (parallel, other):  # ranks that disagree on their data stop, all of them
        assert "disagree on the data split" in result["refused"]


def test_gan_on_two_processes_matches_one(runs: tuple[dict[str, Any], dict[str, Any], Path]) -> None:
    single, parallel, out = runs
    _assert_close(parallel["generator"], single["generator"])
    # Only rank 0 writes: checkpoint, TensorBoard log and model.
    assert (out / "gan_rank0" / "checkpoint.pt").is_file() and (out / "gan_rank0" / "model").is_dir()
    assert not (out / "gan_rank1").exists()


def test_batches_that_the_processes_cannot_share_are_refused() -> None:
    with pytest.raises(ConfigError, match="multiple of 3"):
        World(rank=0, size=3).per_rank_batch(32, "trainer.batch_size")
    assert [World(rank=r, size=3).shard(8) for r in range(3)] == [slice(0, 3), slice(3, 6), slice(6, 8)]


def test_one_process_sets_nothing_up_and_backends_are_checked() -> None:
    assert init_distributed("auto", env={}) == World()
    assert init_distributed("gloo", env={"WORLD_SIZE": "1"}) == World()
    with pytest.raises(ConfigError, match="torchrun"):
        init_distributed("gloo", env={"WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="one of"):
        resolve_backend("mpi")
    assert resolve_backend("gloo") == "gloo"
    if not torch.cuda.is_available():
        assert resolve_backend("auto") == "gloo"
        with pytest.raises(ConfigError, match="CUDA"):
            resolve_backend("nccl")
