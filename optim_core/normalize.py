"""Stateless gradient normalizations: frobenius, rms, row, col, standardize, sign, sinkhorn.

Orientation follows docs/references.md#conventions (PyTorch layout ``W ∈ R^{m×n}``, m = rows = fan_out):
"row" reduces over dim 1 (one scale per output unit), "col" over dim 0. Parameters with more than
two dims are viewed as ``(shape[0], -1)``. Row/col normalizations make each row/column RMS 1
(ℓ2 = √n per row, √m per column), which is both SCALE's rule and one SinkGD half-step.

The norms whose statistics span dim 0 (col, rms, frobenius, standardize down columns, sinkhorn)
take ``reduce`` and the full tensor's ``rows``/``numel``: on a ``Shard(0)`` shard of an FSDP2
parameter ``reduce`` sums the ranks' partial sums (an all-reduce, :mod:`optim_core.dist_norms`),
in one process it is the identity, so both run the same lines.

References: docs/references.md#swan (GradNorm), #sinkgd (SR-Sinkhorn), #scale, #vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

EpsMode = Literal["add", "clamp"]


Reduce = Callable[[Tensor], Tensor]  # sums partial sums over the ranks (in place), returns them


def _own(t: Tensor) -> Tensor:
    """One process: a partial sum is the whole sum."""
    return t


def _mean0(t: Tensor, reduce: Reduce, rows: int) -> Tensor:
    """Mean over dim 0 of the full matrix (``sum / rows``, which equals torch's ``mean``)."""
    return reduce(t.sum(dim=0, keepdim=True)).div_(rows)


def _norm2(u: Tensor, reduce: Reduce) -> Tensor:
    """‖u‖_F of the full tensor (0-D): torch's ``vector_norm`` in one process."""
    return torch.linalg.vector_norm(u) if reduce is _own else reduce(u.square().sum()).sqrt_()


def _mat(u: Tensor) -> Tensor:
    if u.ndim < 2:
        raise ValueError(f"expected a >=2-D update, got shape {tuple(u.shape)}")
    return u.reshape(u.shape[0], -1)


def _guard(x: Tensor, eps: float, mode: EpsMode) -> Tensor:
    return x.add(eps) if mode == "add" else x.clamp_min(eps)


def frobenius(
    u: Tensor,
    target: float = 1.0,
    eps: float = 1e-8,
    eps_mode: EpsMode = "add",
    reduce: Reduce = _own,
) -> Tensor:
    """``u · target / (‖u‖_F ⊕ eps)``: the whole tensor to Frobenius norm ``target``."""
    return u * (target / _guard(_norm2(u, reduce), eps, eps_mode))


def rms(u: Tensor, eps: float = 1e-8, reduce: Reduce = _own, numel: int | None = None) -> Tensor:
    """``u / max(RMS(u), eps)``: the whole tensor (``numel`` elements) to RMS 1."""
    n = u.numel() if numel is None else numel
    return u / (_norm2(u, reduce) / math.sqrt(max(n, 1))).clamp_min(eps)


def row(u: Tensor, eps: float = 1e-8) -> Tensor:
    """Every row to RMS 1 (ℓ2 = √n): ``u / max(sqrt(mean(u², dim=1)), eps)`` (SCALE Linear)."""
    x = _mat(u)
    s = x.square().mean(dim=1, keepdim=True).sqrt_().clamp_min_(eps)
    return (x / s).reshape(u.shape)


def col(u: Tensor, eps: float = 1e-8, reduce: Reduce = _own, rows: int | None = None) -> Tensor:
    """Every column to RMS 1 (ℓ2 = √m): ``u / max(sqrt(mean(u², dim=0)), eps)``."""
    x = _mat(u)
    s = _mean0(x.square(), reduce, rows or x.size(0)).sqrt_().clamp_min_(eps)
    return (x / s).reshape(u.shape)


StandardizeAxis = Literal["larger", "row"]


def standardize_dim(axis: StandardizeAxis, rows: int, cols: int) -> int:
    """The dim ``standardize`` takes its statistics along: 0 (down the columns) only for the
    ``larger`` axis of a tall matrix."""
    return 0 if axis == "larger" and rows > cols else 1


def standardize(
    u: Tensor,
    eps: float = 1e-8,
    axis: StandardizeAxis = "row",
    reduce: Reduce = _own,
    rows: int | None = None,
) -> Tensor:
    """Mean 0 and (population) std 1 along one dimension.

    ``axis="larger"`` is SWAN's GradNorm (arXiv 2412.13148, with ``m <= n``: every one of the m
    rows standardized across its n columns), i.e. the statistics run along the larger side: rows
    of a wide or square matrix, columns of a tall one. ``axis="row"`` always standardizes rows.
    """
    x = _mat(u)
    m = rows or x.size(0)
    if standardize_dim(axis, m, x.size(1)) == 1:  # along rows: local to every row
        centered = x - x.mean(dim=1, keepdim=True)
        s = centered.square().mean(dim=1, keepdim=True)
    else:
        centered = x - _mean0(x, reduce, m)
        s = _mean0(centered.square(), reduce, m)
    return (centered / s.sqrt_().clamp_min_(eps)).reshape(u.shape)


def sign(u: Tensor) -> Tensor:
    """Elementwise sign with ``sign(0) = 0`` (signSGD)."""
    return torch.sign(u)


def sinkhorn(
    u: Tensor, iters: int = 5, eps: float = 1e-8, reduce: Reduce = _own, rows: int | None = None
) -> Tensor:
    """SinkGD's SR-Sinkhorn: ``iters`` × (rows to ℓ2 √n, then columns to ℓ2 √m).

    Ends on a column step, so every column has ℓ2 exactly √m (up to the ``eps`` clamp).
    Computed in scale form ``X = diag(r)·G·diag(c)``: a row (column) RMS of X is
    ``r_i·sqrt((G²·c²)_i / n)`` (``c_j·sqrt((r²·G²)_j / m)``), so each half-step is one
    matrix-vector product with ``G²`` instead of a full pass that rewrites X.
    """
    x = _mat(u)
    m, n = rows or x.size(0), x.size(1)
    sq = x.square()
    r = torch.ones(x.size(0), dtype=x.dtype, device=x.device)
    c = torch.ones(n, dtype=x.dtype, device=x.device)
    for _ in range(iters):
        r = _rescale(r, (sq @ c.square()).div_(n).sqrt_(), eps)
        c = _rescale(c, reduce(r.square() @ sq).div_(m).sqrt_(), eps)
    return (x * r[:, None] * c[None, :]).reshape(u.shape)


def _rescale(scale: Tensor, base_rms: Tensor, eps: float) -> Tensor:
    """New scales so each slice of ``diag(scale)·B`` gets RMS 1 (``/ max(rms, eps)`` as the
    literal algorithm); all-zero slices keep scale 1 (they stay zero, no overflow)."""
    new = scale / (scale * base_rms).clamp_min_(eps)
    return torch.where(base_rms > 0, new, torch.ones_like(new))


def sinkhorn_reference(u: Tensor, iters: int = 5, eps: float = 1e-8) -> Tensor:
    """The literal algorithm (alternate :func:`row` and :func:`col`); used to test the fast form."""
    x = _mat(u)
    for _ in range(iters):
        x = col(row(x, eps), eps)
    return x.reshape(u.shape)


NormKind = Literal["frobenius", "rms", "row", "col", "standardize", "sign", "sinkhorn"]


@dataclass
class Normalize:
    """Stateless stage applying one of the normalizations above."""

    kind: NormKind
    eps: float = 1e-8
    target: float = 1.0  # frobenius only
    eps_mode: EpsMode = "add"  # frobenius only
    iters: int = 5  # sinkhorn only
    axis: StandardizeAxis = "row"  # standardize only
    # on an FSDP2 Shard(0) shard: the full tensor's shape and the sum over the ranks
    full_shape: tuple[int, ...] | None = None
    reduce: Reduce = field(default=_own, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.kind

    def init(self, p: Tensor) -> dict[str, Tensor]:
        return {}

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        shape, red = self.full_shape, self.reduce
        rows = shape[0] if shape else None
        if self.kind == "frobenius":
            return frobenius(u, self.target, self.eps, self.eps_mode, red)
        if self.kind == "rms":
            return rms(u, self.eps, red, math.prod(shape) if shape else None)
        if self.kind == "row":
            return row(u, self.eps)
        if self.kind == "col":
            return col(u, self.eps, red, rows)
        if self.kind == "standardize":
            return standardize(u, self.eps, self.axis, red, rows)
        if self.kind == "sinkhorn":
            return sinkhorn(u, self.iters, self.eps, red, rows)
        return sign(u)

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return 0


@dataclass
class Scale:
    """Stateless stage multiplying the update by a constant."""

    factor: float
    name: str = "scale"

    def init(self, p: Tensor) -> dict[str, Tensor]:
        return {}

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        return u * self.factor

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return 0
