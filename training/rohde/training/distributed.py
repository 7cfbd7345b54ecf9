"""Data-parallel training over several processes started by `torchrun` (gloo on CPUs, NCCL on GPUs).

Every rank runs the whole pipeline on the same data (the split and every seed are the same, so the
ranks agree without talking); only the training loops share work. A step splits its global batch
(the configured batch size) into one contiguous share per rank, each rank computes the gradient of
its share, and the gradients are summed over the ranks with one `all_reduce` before the optimiser
steps, so every rank takes the same step as one process on the whole batch would.

Why not `DistributedDataParallel`: the WGAN-GP's gradient penalty differentiates the critic's
gradient (`autograd.grad(..., create_graph=True)`), and DDP does not support double backward:
gradients reduced by its hooks during a penalty pass are wrong or missing (pytorch/pytorch#47562,
#63812, #63929); `static_graph` and `no_sync` do not change that. Averaging after `backward()` is
exact, and one code path serves the GAN and the classifier. The classifier has batch norm and
dropout, so to stay equal to one process those layers work on the global batch during training
(`global_batch_layers`): batch norm takes its statistics over all ranks (a differentiable
`all_reduce`; `nn.SyncBatchNorm` runs on GPUs only), dropout draws its mask for the whole batch from
the seeded generator every rank shares and keeps its own rows.

The result equals a one-process run on the same global batch and seed up to the order of float
additions (`tests/training/test_distributed.py`: parameters within 1e-5 after a few steps). One
exception, in one process as in several: a convolution's bias right before batch norm has no true
gradient, so Adam turns float noise into its steps and it drifts by up to about 1e-2 between runs
that sum in another order, without changing what the network computes in training.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import types
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from rohde.core.errors import ConfigError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "gloo", "nccl")
# What torchrun sets for every process besides WORLD_SIZE.
_TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """The processes training together; one process (rank 0 of 1) when no process group is set up."""

    rank: int = 0  # this process, 0 .. size - 1; rank 0 alone writes outputs
    size: int = 1  # number of processes
    local_rank: int = 0  # this process on its node (its GPU with NCCL)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def shard(self, n_rows: int) -> slice:
        """This rank's contiguous rows of a global batch of `n_rows` (the first `n_rows % size` ranks get one more)."""
        base, extra = divmod(n_rows, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def per_rank_batch(self, global_batch: int, what: str) -> int:
        """`global_batch / size`, refusing a batch that the ranks cannot share evenly."""
        if global_batch % self.size:
            raise ConfigError(
                f"{what} is {global_batch}, which {self.size} processes cannot share evenly; the global batch "
                f"stays the configured one, so choose a multiple of {self.size} or another process count."
            )
        return global_batch // self.size


def current_world() -> World:
    """The world of the process group set up by `init_distributed`, or one process when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def resolve_backend(name: str) -> str:
    """"auto" is NCCL when CUDA is available, else gloo; "nccl" needs CUDA."""
    if name not in BACKENDS:
        raise ConfigError(f"The distributed backend must be one of {list(BACKENDS)}, got {name!r}.")
    if name == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if name == "nccl" and not torch.cuda.is_available():
        raise ConfigError("The distributed backend 'nccl' needs CUDA GPUs; none is available. Use 'gloo' on CPUs.")
    return name


def init_distributed(backend: str = "auto", *, env: Mapping[str, str] | None = None) -> World:
    """Join the process group `torchrun` describes in the environment (WORLD_SIZE, RANK, MASTER_ADDR ...).

    Without torchrun, or with one process, nothing is set up and the run is the plain one-process run.
    With NCCL each process uses the GPU of its LOCAL_RANK.
    """
    env = os.environ if env is None else env
    size = int(env.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    missing = [name for name in _TORCHRUN_VARIABLES if name not in env]
    if missing:
        raise ConfigError(f"WORLD_SIZE is {size} but {missing} are not set; start several processes with torchrun.")
    chosen = resolve_backend(backend)
    local_rank = int(env["LOCAL_RANK"])
    if chosen == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} has no GPU ({torch.cuda.device_count()} visible); start at most one "
                "process per GPU (torchrun --nproc-per-node)."
            )
        torch.cuda.set_device(local_rank)  # "cuda" now means this process's GPU
    dist.init_process_group(backend=chosen, init_method="env://", rank=int(env["RANK"]), world_size=size)
    world = current_world()
    logger.info("Rank %s of %s (local rank %s) joined the %s process group.", world.rank, world.size,
                world.local_rank, chosen)  # fmt: skip
    return world


@contextmanager
def distributed_training(backend: str = "auto") -> Iterator[World]:
    """`init_distributed` for the duration of a command; the process group is torn down at the end."""
    world = init_distributed(backend)
    try:
        yield world
    finally:
        if world.parallel and dist.is_initialized():
            dist.destroy_process_group()


def sum_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replace every gradient by its sum over the ranks (a missing one counts as zeros), in one `all_reduce`."""
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p)
        offset += n


def average_gradients(parameters: Iterable[nn.Parameter], world: World) -> None:
    """Gradients averaged over the ranks: exact when every rank's loss is the mean of an equal share."""
    params = [p for p in parameters if p.requires_grad]
    sum_gradients(params)
    for p in params:
        if p.grad is not None:
            p.grad.div_(world.size)


def _collective_device() -> torch.device:
    """Where the backend's collectives want their tensors: NCCL on this process's GPU, gloo anywhere."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """A copy of `values` summed over the ranks (identical on every rank), on the device of `values`."""
    out = values.detach().to(_collective_device()).clone()
    dist.all_reduce(out)
    return out.to(values.device)


def broadcast_from_main(module: nn.Module) -> None:
    """Every rank starts from rank 0's parameters and buffers (they are seeded alike; this makes sure)."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def require_same_on_all_ranks(value: int, what: str) -> None:
    """Refuse to go on when the ranks disagree on `value` (the data, a resumed step ...)."""
    mine = torch.tensor([value, -value], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(mine, op=dist.ReduceOp.MAX)  # max of v and of -v: equal only if all agree
    if int(mine[0]) != -int(mine[1]):
        raise ConfigError(
            f"The processes disagree on {what} ({value} on rank {dist.get_rank()}); every rank must see the same "
            "data and files (a shared work folder when resuming)."
        )


def require_same_json(value: Any, what: str) -> None:
    """`require_same_on_all_ranks` for any JSON-able value (a data split, window counts ...), by its digest."""
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).digest()
    require_same_on_all_ranks(int.from_bytes(digest[:7], "big"), what)


class _SumAcrossRanks(torch.autograd.Function):
    """y = sum of x over the ranks; its gradient is the sum of every rank's gradient of y."""

    @staticmethod
    def forward(ctx: object, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


def _sum_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = _SumAcrossRanks.apply(tensor)
    return out


def _global_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm in training mode with the statistics of the whole global batch (the shares of all ranks)."""
    dims = [0, *range(2, x.dim())]
    shape = (1, -1, *([1] * (x.dim() - 2)))
    count = _sum_across_ranks(x.new_tensor([x.numel() / max(1, x.shape[1])]))
    mean = _sum_across_ranks(x.sum(dims)) / count
    centred = x - mean.view(shape)
    var = _sum_across_ranks((centred * centred).sum(dims)) / count  # biased, as batch norm normalises
    y = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            tracked = bn.num_batches_tracked
            if tracked is not None:
                tracked.add_(1)
            if bn.momentum is None:
                factor = 1.0 / float(tracked) if tracked is not None else 0.0
            else:
                factor = bn.momentum
            n = float(count)
            bn.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            bn.running_var.mul_(1 - factor).add_(var.detach() * (n / max(1.0, n - 1)), alpha=factor)
    return y


class GlobalBatch:
    """The rows of the current global batch this rank holds; `global_batch_layers` reads it."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.n_rows = 0
        self.rows = slice(0, 0)

    def set(self, n_rows: int) -> slice:
        """Start a step on a global batch of `n_rows`; returns this rank's rows of it."""
        self.n_rows, self.rows = n_rows, self.world.shard(n_rows)
        return self.rows


def _batch_norm_forward(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if bn.training:
        return _global_batch_norm(bn, x)
    plain: torch.Tensor = type(bn).forward(bn, x)
    return plain


def _global_mask_dropout(drop: nn.Dropout, batch: GlobalBatch, x: torch.Tensor) -> torch.Tensor:
    """Dropout whose mask is drawn for the whole global batch (as one process draws it), then cut to our rows.

    One process draws `empty_like(x).bernoulli_(1 - p) / (1 - p)` on a CPU; drawing the same shape
    from the same seeded generator gives the same mask.
    """
    if not drop.training or drop.p == 0.0:
        return x
    if drop.p == 1.0:
        return x * 0.0
    keep = 1.0 - drop.p
    noise = torch.empty((batch.n_rows, *x.shape[1:]), dtype=x.dtype, device=x.device).bernoulli_(keep).div_(keep)
    return x * noise[batch.rows]


@contextmanager
def global_batch_layers(model: nn.Module, world: World) -> Iterator[GlobalBatch]:
    """While training data-parallel, batch norm and dropout of `model` behave as on the whole global batch.

    Call `GlobalBatch.set(n_rows)` before each step. Outside the block (evaluation, export) and in
    one process the layers are untouched. Other batch-coupled or random layers are refused.
    """
    batch = GlobalBatch(world)
    patched: list[nn.Module] = []
    try:
        for module in model.modules() if world.parallel else ():
            if isinstance(module, nn.SyncBatchNorm) or (
                isinstance(module, nn.modules.dropout._DropoutNd) and type(module) is not nn.Dropout
            ):
                raise ConfigError(
                    f"Data-parallel training supports nn.Dropout and batch norm, not {type(module).__name__}."
                )
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.forward = types.MethodType(_batch_norm_forward, module)  # type: ignore[method-assign]
                patched.append(module)
            elif isinstance(module, nn.Dropout):
                module.forward = functools.partial(_global_mask_dropout, module, batch)  # type: ignore[method-assign]
                patched.append(module)
        yield batch
    finally:
        for module in patched:
            del module.forward  # back to the class's forward
