"""Analytical per-rank optimizer state and communication under FSDP2 (``Shard(0)``, 1-D mesh).

The rules are those of the runtime (:mod:`optim_core.dist_step`, via
:mod:`optim_core.dist_plan`): a shard-local parameter holds state for its ``Shard(0)`` piece on
every rank; a whole-matrix parameter holds its full state on its owner rank only (round-robin
in model order). ``sharded_state_bytes(...).per_rank[r]`` equals
``optim_core.measure_state_bytes(opt)`` on rank ``r`` once every parameter stepped, and
``per_rank`` sums to ``total``; with ``world=1`` ``total`` is ``optim_core.state_bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from optim_core.accounting import param_stages
from optim_core.base import numel
from optim_core.dist_norms import REDUCIBLE, allreduce_calls, ring_allreduce_bytes
from optim_core.dist_plan import assign_owners, localize, path_of, shard_shape
from optim_core.normalize import Normalize
from optim_core.recipe import Recipe

__all__ = ["ShardedBytes", "comm_bytes_per_step", "sharded_state_bytes"]


@dataclass(frozen=True)
class ShardedBytes:
    """Bytes on each rank and their sum."""

    per_rank: tuple[int, ...]
    total: int


@dataclass(frozen=True)
class _Placed:
    shape: tuple[int, ...]
    stages: list[Any]
    owner: int | None  # None: shard-local


def _placed(
    recipe: Recipe,
    named_shapes: Mapping[str, Sequence[int]],
    world: int,
    model_facts: Mapping[str, Any] | None,
) -> list[_Placed]:
    """Every parameter in model order with its stages and owner (``None``: shard-local)."""
    built = {name: (shp, st) for name, shp, st in param_stages(recipe, named_shapes, model_facts)}
    order = [built[name] for name in named_shapes]
    owners = assign_owners([path_of(stages) for _, stages in order], world)
    return [
        _Placed(shp, st if o is not None or world == 1 else localize(st, shp), o)
        for (shp, st), o in zip(order, owners, strict=True)
    ]


def _bytes(stages: list[Any], shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return sum(st.state_bytes(shape, dtype) for st in stages)


def sharded_state_bytes(
    recipe: Recipe,
    named_shapes: Mapping[str, Sequence[int]],
    world: int,
    dtype: torch.dtype = torch.float32,
    model_facts: Mapping[str, Any] | None = None,
) -> ShardedBytes:
    """Optimizer state bytes per rank when every parameter is ``fully_shard``-ed over ``world``
    ranks (arguments as :func:`optim_core.state_bytes`)."""
    per_rank = [0] * world
    for item in _placed(recipe, named_shapes, world, model_facts):
        if item.owner is None:
            for r in range(world):
                per_rank[r] += _bytes(item.stages, shard_shape(item.shape, world, r), dtype)
        else:
            per_rank[item.owner] += _bytes(item.stages, item.shape, dtype)
    return ShardedBytes(tuple(per_rank), sum(per_rank))


def comm_bytes_per_step(
    recipe: Recipe,
    named_shapes: Mapping[str, Sequence[int]],
    world: int,
    dtype: torch.dtype = torch.float32,
    model_facts: Mapping[str, Any] | None = None,
) -> tuple[int, ...]:
    """Bytes each rank receives in the optimizer step's own collectives (FSDP2's all-gather
    and reduce-scatter of the training step not included): per whole-matrix parameter of
    ``N`` elements, its owner receives the other ranks' shards of weight and gradient
    (``2·(N − n_owner)``, :mod:`optim_core.dist_exchange`) and every other rank ``r`` its
    ``n_r`` rows of the new weight; per
    shard-local parameter, the fp32 statistics its norms all-reduce (``k`` elements:
    :func:`optim_core.dist_norms.allreduce_calls`, each a ring all-reduce,
    ``2·(w − 1)/w·k``); nothing for elementwise pipelines."""
    if world == 1:
        return (0,)
    received = [0] * world
    for item in _placed(recipe, named_shapes, world, model_facts):
        for r in range(world):
            received[r] += _received(item, world, r, dtype)
    return tuple(received)


def _received(item: _Placed, world: int, rank: int, dtype: torch.dtype) -> int:
    size = dtype.itemsize
    if item.owner is None:  # fp32 statistics, one ring all-reduce per call
        return sum(
            ring_allreduce_bytes(k, world, 4)
            for st in item.stages
            if isinstance(st, Normalize) and st.kind in REDUCIBLE
            for k in allreduce_calls(st, item.shape)
        )
    local = numel(shard_shape(item.shape, world, rank))
    return size * (2 * (numel(item.shape) - local) if rank == item.owner else local)
