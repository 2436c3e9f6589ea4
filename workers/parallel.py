"""One rank of a multi-process run: its process group, the wrapped model, its share of a batch.

A run with ``parallel: ddp | fsdp`` and ``world_size: N`` is N processes started by torchrun
(``torch.distributed.run``, :mod:`workers.launch`), one per device (CUDA: one GPU each, NCCL;
CPU: gloo). Every rank builds the same seeded model and data; then

- ``ddp``: the model is wrapped in ``DistributedDataParallel`` (gradients all-reduced, the
  optimizer replicated on every rank);
- ``fsdp``: every transformer block and then the root get ``fully_shard`` (FSDP2: parameters
  become ``DTensor``s sharded on dim 0; optim_core steps the shards, docs/distributed.md).

Each rank trains on its contiguous ``1/N`` of every global batch (the global batch size stays
the workload's, so the loss and the averaged gradient equal the one-process run's); every rank
evaluates the whole held-out set (FSDP's forward needs every rank), and the curve's train loss
is the mean over ranks. Only rank 0 reports. Collectives time out after
``Settings.dist_timeout_s``, so a dead peer ends the run instead of hanging it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from workers.data import Batches
from workers.train_types import ParallelMode


@dataclass(frozen=True)
class RankContext:
    """This process's place in the group (``world_size`` 1, mode ``none``: a plain run)."""

    mode: ParallelMode = "none"
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train: DDP around ``model``, or ``model`` itself sharded in place."""
        if self.mode == "ddp":
            ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
            return DistributedDataParallel(model, device_ids=ids)
        if self.mode == "fsdp":
            for block in getattr(model, "layers", []):
                fully_shard(block)
            fully_shard(model)
        return model

    def mean(self, t: Tensor) -> Tensor:
        """``t`` averaged over the ranks (a copy; ``t`` itself when alone)."""
        if self.world_size == 1:
            return t
        out = t.detach().float().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.div_(self.world_size)

    def total(self, value: int) -> int:
        """``value`` summed over the ranks."""
        if self.world_size == 1:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return int(t.item())


def backend_for(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


def init_rank(mode: ParallelMode, device: str, timeout_s: float) -> RankContext:
    """Join the group torchrun set up (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment
    torchrun gives each worker) and pick this rank's device."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), timeout=timedelta(seconds=timeout_s))
    return RankContext(mode=mode, rank=rank, world_size=world, device=device)


def leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class RankBatches(Batches):
    """This rank's contiguous share of every training batch; the whole held-out set."""

    def __init__(self, data: Batches, ctx: RankContext) -> None:
        self.data, self.ctx = data, ctx
        self.tokens_per_batch = data.tokens_per_batch  # global: the curve counts all ranks

    def train_batch(self, step: int) -> tuple[Tensor, Tensor]:
        x, y = self.data.train_batch(step)
        n = x.shape[0] // self.ctx.world_size
        if n * self.ctx.world_size != x.shape[0]:
            raise ValueError(
                f"batch size {x.shape[0]} is not divisible by world_size {self.ctx.world_size}"
            )
        lo = self.ctx.rank * n
        return x[lo : lo + n], y[lo : lo + n]

    def val_batches(self, final: bool = False) -> list[tuple[Tensor, Tensor]]:
        return self.data.val_batches(final)
