"""Normalizations of a ``Shard(0)`` shard whose statistics span the sharded axis: each rank
reduces its rows, the partial sums are all-reduced (``reduce``), and every rank scales its
own rows, so the matrix is never gathered.

Per call, the elements all-reduced (:func:`allreduce_numel`, an ``m×n`` matrix): ``col`` n
(column sums of squares), ``rms`` / ``frobenius`` 1, ``standardize`` along columns 2n (sums,
then centred sums of squares; along rows it is shard-local: 0), ``sinkhorn`` ``iters``·n (one
column step per iteration; the row steps are local). The math is the single-process one of
:mod:`optim_core.normalize` with sums in another order (fp32 rounding: ~1e-7 relative).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from optim_core.normalize import Normalize, _guard, _mat, _rescale, standardize

Reduce = Callable[[Tensor], Tensor]  # sum over the ranks (in place), returns the tensor

REDUCIBLE = frozenset({"col", "rms", "frobenius", "standardize", "sinkhorn"})

__all__ = [
    "REDUCIBLE",
    "ShardedNormalize",
    "allreduce_calls",
    "allreduce_numel",
    "ring_allreduce_bytes",
    "sharded_normalize",
]


def col_sharded(u: Tensor, rows: int, eps: float, reduce: Reduce) -> Tensor:
    """:func:`optim_core.normalize.col` of the full matrix, on this shard's rows."""
    x = _mat(u)
    s = reduce(x.square().sum(dim=0, keepdim=True)).div_(rows).sqrt_().clamp_min_(eps)
    return (x / s).reshape(u.shape)


def norm_sharded(u: Tensor, reduce: Reduce) -> Tensor:
    """‖U‖_F of the full tensor (0-D) from this shard."""
    return reduce(u.square().sum()).sqrt_()


def columns_standardize_sharded(u: Tensor, rows: int, eps: float, reduce: Reduce) -> Tensor:
    """Mean 0 and std 1 down every column of the full matrix, on this shard's rows."""
    x = _mat(u)
    centered = x - reduce(x.sum(dim=0, keepdim=True)).div_(rows)
    var = reduce(centered.square().sum(dim=0, keepdim=True)).div_(rows)
    return (centered / var.sqrt_().clamp_min_(eps)).reshape(u.shape)


def sinkhorn_sharded(u: Tensor, rows: int, iters: int, eps: float, reduce: Reduce) -> Tensor:
    """:func:`optim_core.normalize.sinkhorn` (scale form) with the column sums all-reduced."""
    x = _mat(u)
    n = x.size(1)
    sq = x.square()
    r = torch.ones(x.size(0), dtype=x.dtype, device=x.device)
    c = torch.ones(n, dtype=x.dtype, device=x.device)
    for _ in range(iters):
        r = _rescale(r, (sq @ c.square()).div_(n).sqrt_(), eps)
        c = _rescale(c, reduce(r.square() @ sq).div_(rows).sqrt_(), eps)
    return (x * r[:, None] * c[None, :]).reshape(u.shape)


def _columns(norm: Normalize, full_shape: tuple[int, ...]) -> bool:
    """Whether ``standardize`` runs down the columns (SWAN's ``larger`` axis of a tall matrix)."""
    rows, cols = full_shape[0], math.prod(full_shape[1:])
    return norm.axis == "larger" and rows > cols


def sharded_normalize(
    norm: Normalize, u: Tensor, full_shape: tuple[int, ...], reduce: Reduce
) -> Tensor:
    """``norm`` (a :data:`REDUCIBLE` kind) of the full tensor of ``full_shape``, on shard ``u``."""
    rows, numel = full_shape[0], math.prod(full_shape)
    if norm.kind == "col":
        return col_sharded(u, rows, norm.eps, reduce)
    if norm.kind == "rms":
        return u / (norm_sharded(u, reduce) / math.sqrt(max(numel, 1))).clamp_min(norm.eps)
    if norm.kind == "frobenius":
        total = _guard(norm_sharded(u, reduce), norm.eps, norm.eps_mode)
        return u * (norm.target / total)
    if norm.kind == "standardize":
        if _columns(norm, full_shape):
            return columns_standardize_sharded(u, rows, norm.eps, reduce)
        return standardize(u, norm.eps, norm.axis)
    if norm.kind == "sinkhorn":
        return sinkhorn_sharded(u, rows, norm.iters, norm.eps, reduce)
    raise ValueError(f"sharded_normalize: {norm.kind!r} is not one of {sorted(REDUCIBLE)}")


def allreduce_calls(norm: Normalize, full_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Elements of each all-reduce ``norm`` makes per step on a ``Shard(0)`` shard of
    ``full_shape`` (one entry per call)."""
    cols = math.prod(full_shape[1:]) if len(full_shape) > 1 else 1
    if norm.kind == "standardize":
        return (cols, cols) if _columns(norm, full_shape) else ()
    per_kind = {"col": (cols,), "rms": (1,), "frobenius": (1,), "sinkhorn": (cols,) * norm.iters}
    return per_kind.get(norm.kind, ())


def allreduce_numel(norm: Normalize, full_shape: tuple[int, ...]) -> int:
    """Elements ``norm`` all-reduces per step on a ``Shard(0)`` shard of ``full_shape``."""
    return sum(allreduce_calls(norm, full_shape))


def ring_allreduce_bytes(numel: int, world: int, itemsize: int) -> int:
    """Bytes each rank receives in one ring all-reduce of ``numel`` elements:
    ``2·(w − 1)·numel/w`` elements (floored per call, as :class:`CommMeter` counts them)."""
    return 2 * (world - 1) * numel // world * itemsize


@dataclass
class ShardedNormalize:
    """Stage: ``base`` on a ``Shard(0)`` shard of a parameter of ``full_shape`` (stateless, so
    its state keys are those of ``base``: none)."""

    base: Normalize
    full_shape: tuple[int, ...]
    reduce: Reduce

    @property
    def name(self) -> str:
        return self.base.name

    def init(self, p: Tensor) -> dict[str, Tensor]:
        return {}

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        return sharded_normalize(self.base, u, self.full_shape, self.reduce)

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return 0
