"""Whole matrices to their owner ranks and their new shards back: two ``all_to_all`` per param
group and step (the distributed-Muon pattern), for ``Shard(0)`` DTensors on a 1-D mesh.

:func:`gather_to_owners`: every rank sends the local shards of weight and gradient of each
matrix to the matrix's owner, which assembles the full tensors (the owner receives
``2·(N − n_owner)`` elements of an ``N``-element matrix, no other rank receives anything of it).
:func:`scatter_from_owners`: each owner sends rank ``r`` its rows of the new weight (rank ``r``
receives ``n_r``). Shard sizes follow ``torch.chunk`` on dim 0, as FSDP2's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from optim_core.base import numel
from optim_core.dist_plan import shard_shape

__all__ = ["gather_to_owners", "scatter_from_owners"]


def _n(p: Tensor, rank: int, world: int) -> int:
    return numel(shard_shape(tuple(p.shape), world, rank))


def _flat(parts: list[Tensor], like: Tensor) -> Tensor:
    """``parts`` concatenated; an empty tensor of ``like``'s dtype and device (NCCL needs the
    device) when there are none."""
    return torch.cat(parts) if parts else torch.empty(0, dtype=like.dtype, device=like.device)


def gather_to_owners(
    params: Sequence[Tensor],
    locals_: Mapping[Tensor, tuple[Tensor, Tensor]],
    owners: Mapping[Tensor, int | None],
    group: dist.ProcessGroup,
) -> dict[Tensor, tuple[Tensor, Tensor]]:
    """Full ``(weight, grad)`` of the ``params`` this rank owns, from every rank's local shards
    ``locals_[p]``. ``params`` (one dtype) are in the same order on every rank."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    dtype = params[0].dtype
    for p in params:  # FSDP2 shards as torch.chunk on dim 0: the sizes all ranks assume
        assert locals_[p][0].numel() == _n(p, rank, world), f"unexpected shard of {p.shape}"
    mine = [p for p in params if owners[p] == rank]
    send = [
        [t.reshape(-1) for p in params if owners[p] == d for t in locals_[p]] for d in range(world)
    ]
    in_sizes = [sum(t.numel() for t in parts) for parts in send]
    out_sizes = [sum(2 * _n(p, s, world) for p in mine) for s in range(world)]
    received = torch.empty(sum(out_sizes), dtype=dtype, device=params[0].device)
    flat = _flat([t for parts in send for t in parts], params[0])
    dist.all_to_all_single(received, flat, out_sizes, in_sizes, group=group)
    pieces: dict[Tensor, tuple[list[Tensor], list[Tensor]]] = {p: ([], []) for p in mine}
    offset = 0
    for s in range(world):
        for p in mine:
            n = _n(p, s, world)
            pieces[p][0].append(received[offset : offset + n])
            pieces[p][1].append(received[offset + n : offset + 2 * n])
            offset += 2 * n
    return {
        p: (torch.cat(w).view(p.shape), torch.cat(g).view(p.shape)) for p, (w, g) in pieces.items()
    }


def scatter_from_owners(
    params: Sequence[Tensor],
    fulls: Mapping[Tensor, Tensor],
    owners: Mapping[Tensor, int | None],
    targets: Mapping[Tensor, Tensor],
    group: dist.ProcessGroup,
) -> None:
    """Copy into ``targets[p]`` (this rank's local shard) its rows of the new full weight
    ``fulls[p]`` held by ``p``'s owner."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    dtype = params[0].dtype
    mine = [p for p in params if owners[p] == rank]
    send = []
    for d in range(world):
        for p in mine:
            start = sum(_n(p, r, world) for r in range(d))
            send.append(fulls[p].reshape(-1)[start : start + _n(p, d, world)])
    in_sizes = [sum(_n(p, d, world) for p in mine) for d in range(world)]
    out_sizes = [sum(_n(p, rank, world) for p in params if owners[p] == s) for s in range(world)]
    received = torch.empty(sum(out_sizes), dtype=dtype, device=params[0].device)
    dist.all_to_all_single(received, _flat(send, params[0]), out_sizes, in_sizes, group=group)
    offset = 0
    for s in range(world):
        for p in params:
            if owners[p] == s:
                n = _n(p, rank, world)
                targets[p].copy_(received[offset : offset + n].view_as(targets[p]))
                offset += n
