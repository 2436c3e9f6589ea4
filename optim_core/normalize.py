"""Stateless gradient normalizations: frobenius, rms, row, col, standardize, sign, sinkhorn.

Orientation follows docs/references.md#conventions (PyTorch layout ``W ∈ R^{m×n}``, m = rows = fan_out):
"row" reduces over dim 1 (one scale per output unit), "col" over dim 0. Parameters with more than
two dims are viewed as ``(shape[0], -1)``. Row/col normalizations make each row/column RMS 1
(ℓ2 = √n per row, √m per column), which is both SCALE's rule and one SinkGD half-step.

References: docs/references.md#swan (GradNorm), #sinkgd (SR-Sinkhorn), #scale, #vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

EpsMode = Literal["add", "clamp"]


def _mat(u: Tensor) -> Tensor:
    if u.ndim < 2:
        raise ValueError(f"expected a >=2-D update, got shape {tuple(u.shape)}")
    return u.reshape(u.shape[0], -1)


def _guard(x: Tensor, eps: float, mode: EpsMode) -> Tensor:
    return x.add(eps) if mode == "add" else x.clamp_min(eps)


def frobenius(
    u: Tensor, target: float = 1.0, eps: float = 1e-8, eps_mode: EpsMode = "add"
) -> Tensor:
    """``u · target / (‖u‖_F ⊕ eps)``: the whole tensor to Frobenius norm ``target``."""
    return u * (target / _guard(torch.linalg.vector_norm(u), eps, eps_mode))


def rms(u: Tensor, eps: float = 1e-8) -> Tensor:
    """``u / max(RMS(u), eps)``: the whole tensor to RMS 1 (‖u‖_F = √numel)."""
    scale = torch.linalg.vector_norm(u) / math.sqrt(max(u.numel(), 1))
    return u / scale.clamp_min(eps)


def row(u: Tensor, eps: float = 1e-8) -> Tensor:
    """Every row to RMS 1 (ℓ2 = √n): ``u / max(sqrt(mean(u², dim=1)), eps)`` (SCALE Linear)."""
    x = _mat(u)
    s = x.square().mean(dim=1, keepdim=True).sqrt_().clamp_min_(eps)
    return (x / s).reshape(u.shape)


def col(u: Tensor, eps: float = 1e-8) -> Tensor:
    """Every column to RMS 1 (ℓ2 = √m): ``u / max(sqrt(mean(u², dim=0)), eps)``."""
    x = _mat(u)
    s = x.square().mean(dim=0, keepdim=True).sqrt_().clamp_min_(eps)
    return (x / s).reshape(u.shape)


StandardizeAxis = Literal["larger", "row"]


def standardize(u: Tensor, eps: float = 1e-8, axis: StandardizeAxis = "row") -> Tensor:
    """Mean 0 and (population) std 1 along one dimension.

    ``axis="larger"`` is SWAN's GradNorm (arXiv 2412.13148, with ``m <= n``: every one of the m
    rows standardized across its n columns), i.e. the statistics run along the larger side: rows
    of a wide or square matrix, columns of a tall one. ``axis="row"`` always standardizes rows.
    """
    x = _mat(u)
    dim = 0 if axis == "larger" and x.size(0) > x.size(1) else 1
    centered = x - x.mean(dim=dim, keepdim=True)
    s = centered.square().mean(dim=dim, keepdim=True).sqrt_().clamp_min_(eps)
    return (centered / s).reshape(u.shape)


def sign(u: Tensor) -> Tensor:
    """Elementwise sign with ``sign(0) = 0`` (signSGD)."""
    return torch.sign(u)


def sinkhorn(u: Tensor, iters: int = 5, eps: float = 1e-8) -> Tensor:
    """SinkGD's SR-Sinkhorn: ``iters`` × (rows to ℓ2 √n, then columns to ℓ2 √m).

    Ends on a column step, so every column has ℓ2 exactly √m (up to the ``eps`` clamp).
    Computed in scale form ``X = diag(r)·G·diag(c)``: a row (column) RMS of X is
    ``r_i·sqrt((G²·c²)_i / n)`` (``c_j·sqrt((r²·G²)_j / m)``), so each half-step is one
    matrix-vector product with ``G²`` instead of a full pass that rewrites X.
    """
    x = _mat(u)
    m, n = x.shape
    sq = x.square()
    r = torch.ones(m, dtype=x.dtype, device=x.device)
    c = torch.ones(n, dtype=x.dtype, device=x.device)
    for _ in range(iters):
        r = _rescale(r, (sq @ c.square()).div_(n).sqrt_(), eps)
        c = _rescale(c, (r.square() @ sq).div_(m).sqrt_(), eps)
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

    @property
    def name(self) -> str:
        return self.kind

    def init(self, p: Tensor) -> dict[str, Tensor]:
        return {}

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        if self.kind == "frobenius":
            return frobenius(u, self.target, self.eps, self.eps_mode)
        if self.kind == "rms":
            return rms(u, self.eps)
        if self.kind == "row":
            return row(u, self.eps)
        if self.kind == "col":
            return col(u, self.eps)
        if self.kind == "standardize":
            return standardize(u, self.eps, self.axis)
        if self.kind == "sinkhorn":
            return sinkhorn(u, self.iters, self.eps)
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
