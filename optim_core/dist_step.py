"""Stepping ``DTensor`` parameters (FSDP2 ``fully_shard``, HSDP / tensor-parallel meshes).

:class:`optim_core.RecipeOptimizer` hands every param group that holds a ``DTensor`` to
:func:`step_dtensors` (through :mod:`optim_core.distributed`, which loads this module on first
use); plain tensors (single process, DDP) never come here. Per parameter, the
path of :func:`optim_core.dist_plan.path_of`:

- local: the pipeline runs on ``p.to_local()`` / ``p.grad.to_local()``; its state is sized
  for the local shard (so ``measure_state_bytes`` counts local shards). Quantized state
  (8/4-bit) is blocked per shard: blocks never straddle a shard boundary, and the layout equals
  the unsharded one when a shard's size is a multiple of the block (see docs/distributed.md).
  A fully replicated ``DTensor`` is local whatever its stages.
- owner: the owner rank (round-robin, :func:`optim_core.dist_plan.assign_owners`) receives
  the shards of weight and gradient from every rank (one ``all_to_all`` for all such
  parameters of a param group, :mod:`optim_core.dist_exchange`), runs the single-process
  pipeline on the full matrix with the full state, and sends each rank its rows of the new
  weight (a second ``all_to_all``). Other ranks hold no state for it. On meshes of more than
  one dimension every rank all-gathers and computes the full update itself (state replicated).

Every rank must step the same parameters in the same order (FSDP2 gives every rank a gradient
for every parameter, or none), since the owner path runs collectives.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, Protocol

import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

from optim_core.base import Stage
from optim_core.dist_exchange import gather_to_owners, scatter_from_owners
from optim_core.dist_norms import Reduce
from optim_core.dist_plan import StepPath, assign_owners, localize, path_of

__all__ = ["EVERY_RANK", "owners_of", "step_dtensors"]

EVERY_RANK = -1  # owner of a whole-matrix parameter on a >1-D mesh: each rank computes it


class SteppingOptimizer(Protocol):
    """What this module needs of :class:`optim_core.RecipeOptimizer`."""

    param_groups: list[dict[str, Any]]
    _index: dict[Tensor, int]
    _stages: dict[Tensor, list[Stage]]

    def stages_of(self, p: Tensor) -> list[Stage]: ...

    def _step_group(
        self, params: list[Tensor], group: dict[str, Any], views: list[tuple[Tensor, Any]]
    ) -> None: ...

    def _step_param(
        self, p: Tensor, group: dict[str, Any], view: tuple[Tensor, Tensor] | None = None
    ) -> None: ...


_OWNERS: weakref.WeakKeyDictionary[Any, dict[Tensor, int | None]] = weakref.WeakKeyDictionary()


def _rows_whole(p: DTensor) -> bool:
    """Whether ``p`` is split along dim 0 over a 1-D mesh (FSDP2): whole rows on each rank."""
    return tuple(p.placements) == (Shard(0),)


def _sum_over(group: dist.ProcessGroup) -> Reduce:
    """All-reduce (sum) over ``group``, in place, returning the tensor."""

    def reduce(t: Tensor) -> Tensor:
        dist.all_reduce(t, group=group)
        return t

    return reduce


def _replicated(p: DTensor) -> bool:
    return all(isinstance(pl, Replicate) for pl in p.placements)


def owners_of(opt: SteppingOptimizer) -> dict[Tensor, int | None]:
    """Owner rank of each ``DTensor`` parameter of ``opt`` (``None``: shard-local), cached.
    The first call also gives sharded shard-local parameters their :func:`localize`-d stages."""
    cached = _OWNERS.get(opt)
    if cached is not None:
        return cached
    params = sorted(
        (p for g in opt.param_groups for p in g["params"] if isinstance(p, DTensor)),
        key=lambda p: opt._index[p],
    )
    paths: list[StepPath] = [
        "local" if _replicated(p) else path_of(opt.stages_of(p), _rows_whole(p)) for p in params
    ]
    world = params[0].device_mesh.size() if params else 1
    table: dict[Tensor, int | None] = {}
    for p, owner in zip(params, assign_owners(paths, world), strict=True):
        if owner is None and not _replicated(p):
            reduce = _sum_over(p.device_mesh.get_group()) if _rows_whole(p) else None
            opt._stages[p] = localize(opt._stages[p], tuple(p.shape), reduce)
        table[p] = EVERY_RANK if owner is not None and p.device_mesh.ndim > 1 else owner
    _OWNERS[opt] = table
    return table


def step_dtensors(opt: SteppingOptimizer, params: Sequence[Tensor], group: dict[str, Any]) -> None:
    """One step of ``params`` (those with a gradient) of ``group``: the shard-local ones
    together (the batched Adam kernels apply as in a single process), then the whole ones."""
    owners = owners_of(opt)
    local = [p for p in params if owners.get(p) is None]
    opt._step_group(local, group, [_local_view(p) for p in local])
    batches: dict[tuple[Any, ...], list[Tensor]] = {}
    for p in params:
        owner = owners.get(p)
        if owner == EVERY_RANK:
            _step_everywhere(opt, p, group)
        elif owner is not None and isinstance(p, DTensor):
            batches.setdefault((p.dtype, p.device_mesh), []).append(p)
    for batch in batches.values():  # same order on every rank: params' order
        _step_owned(opt, batch, group, owners)


def _step_owned(
    opt: SteppingOptimizer,
    params: list[Tensor],
    group: dict[str, Any],
    owners: dict[Tensor, int | None],
) -> None:
    """Whole matrices on their owner ranks (one dtype and 1-D mesh): two all-to-alls."""
    assert isinstance(params[0], DTensor)
    pg = params[0].device_mesh.get_group()
    views = {p: _local_view(p) for p in params}
    fulls = gather_to_owners(params, views, owners, pg)
    for p, view in fulls.items():
        opt._step_param(p, group, view=view)
    weights = {p: w for p, (w, _) in fulls.items()}
    scatter_from_owners(params, weights, owners, {p: v[0] for p, v in views.items()}, pg)


def _local_view(p: Tensor) -> tuple[Tensor, Any]:
    """(weight, grad) to step ``p`` on: its local shards, or itself when not a DTensor."""
    if not isinstance(p, DTensor):
        return p, p.grad
    assert isinstance(p.grad, DTensor), "a DTensor parameter needs a DTensor gradient"
    return p.to_local(), p.grad.to_local()


def _step_everywhere(opt: SteppingOptimizer, p: Tensor, group: dict[str, Any]) -> None:
    """All-gather weight and gradient, step the full matrix on every rank (a >1-D mesh: the
    state is replicated), keep this rank's shard."""
    assert isinstance(p, DTensor) and isinstance(p.grad, DTensor)
    weight = p.full_tensor()
    opt._step_param(p, group, view=(weight, p.grad.full_tensor()))
    mine = distribute_tensor(weight, p.device_mesh, p.placements, src_data_rank=None).to_local()
    p.to_local().copy_(mine)
