"""Normalizations of a ``Shard(0)`` shard whose statistics span the sharded axis: each rank
reduces its rows, the partial sums are all-reduced (``reduce``), and every rank scales its
own rows, so the matrix is never gathered.

Per call, the elements all-reduced (:func:`allreduce_calls`, an ``m×n`` matrix): ``col`` n
(column sums of squares), ``rms`` / ``frobenius`` 1, ``standardize`` along columns 2n (sums,
then centred sums of squares; along rows it is shard-local: 0), ``sinkhorn`` ``iters``·n (one
column step per iteration; the row steps are local). The math is :mod:`optim_core.normalize`'s
own, run with the full shape and an all-reduce as its ``reduce`` (:func:`on_shard`); the sums
come in another order (fp32 rounding: ~1e-7 relative).
"""

from __future__ import annotations

import dataclasses
import math

from torch import Tensor

from optim_core.normalize import Normalize, Reduce, standardize_dim

REDUCIBLE = frozenset({"col", "rms", "frobenius", "standardize", "sinkhorn"})

__all__ = [
    "REDUCIBLE",
    "Reduce",
    "allreduce_calls",
    "allreduce_numel",
    "on_shard",
    "ring_allreduce_bytes",
    "sharded_normalize",
]


def on_shard(norm: Normalize, full_shape: tuple[int, ...], reduce: Reduce) -> Normalize:
    """``norm`` (a :data:`REDUCIBLE` kind) run on a ``Shard(0)`` shard of a tensor of
    ``full_shape``: the same stage, told the full shape and how to sum over the ranks."""
    if norm.kind not in REDUCIBLE:
        raise ValueError(f"on_shard: {norm.kind!r} is not one of {sorted(REDUCIBLE)}")
    return dataclasses.replace(norm, full_shape=full_shape, reduce=reduce)


def sharded_normalize(
    norm: Normalize, u: Tensor, full_shape: tuple[int, ...], reduce: Reduce
) -> Tensor:
    """``norm`` of the full tensor of ``full_shape``, on shard ``u``."""
    return on_shard(norm, full_shape, reduce).update(u, {}, u, 0)


def _columns(norm: Normalize, full_shape: tuple[int, ...]) -> bool:
    """Whether ``standardize`` runs down the columns (SWAN's ``larger`` axis of a tall matrix)."""
    return standardize_dim(norm.axis, full_shape[0], math.prod(full_shape[1:])) == 0


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
