"""Spectral normalizations: Newton–Schulz orthogonalization, exact SVD polar factor, whitening.

References: docs/references.md#muon (KJ ``zeropower_via_newtonschulz5`` and torch.optim.Muon), #swan
(GradWhitening, in :mod:`optim_core.whitening`), #pitfalls 5 (bf16 NS is op-order sensitive).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from optim_core.whitening import WhitenMethod, inv_sqrt_newton_schulz, whiten

__all__ = [
    "MUON_COEFFS",
    "Orthogonalize",
    "ShapeScale",
    "inv_sqrt_newton_schulz",
    "newton_schulz",
    "shape_ratio",
    "svd_orthogonalize",
    "whiten",
]

MUON_COEFFS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)

OpOrder = Literal["torch_addmm", "kj"]
ShapeRule = Literal["original", "match_rms_adamw"]


def _mat(u: Tensor) -> Tensor:
    if u.ndim < 2:
        raise ValueError(f"orthogonalization needs a >=2-D update, got shape {tuple(u.shape)}")
    return u.reshape(u.shape[0], -1)


def newton_schulz(
    u: Tensor,
    coeffs: tuple[float, float, float] = MUON_COEFFS,
    steps: int = 5,
    eps: float = 1e-7,
    dtype: torch.dtype = torch.bfloat16,
    op_order: OpOrder = "torch_addmm",
) -> Tensor:
    """Quintic Newton–Schulz ``≈ U·S'·Vᵀ`` of ``u`` (S' roughly in [0.7, 1.2]), in ``dtype``.

    ``op_order="torch_addmm"`` reproduces torch.optim.Muon 2.13 (norm clamped at ``eps``, fused
    addmm); ``"kj"`` reproduces Keller Jordan's reference (``‖X‖ + eps``, unfused). The Gram matrix
    is built on the smaller side (transpose when rows > cols). Returns a tensor of ``dtype``.
    """
    a, b, c = coeffs
    x = _mat(u).to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    if op_order == "torch_addmm":
        x = x.div(x.norm().clamp(min=eps))
        for _ in range(steps):
            gram = x @ x.T
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    else:
        x = x / (x.norm() + eps)
        for _ in range(steps):
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.T
    return x.reshape(u.shape)


def svd_orthogonalize(u: Tensor) -> Tensor:
    """Exact polar factor ``U·Vᵀ`` of ``u`` (fp32 SVD)."""
    x = _mat(u).float()
    if not torch.isfinite(x).all():  # a diverged run: propagate NaN instead of raising
        return torch.full_like(u, float("nan"), dtype=torch.float32)
    left, _, right_t = torch.linalg.svd(x, full_matrices=False)
    return (left @ right_t).reshape(u.shape)


def shape_ratio(shape: tuple[int, ...], rule: ShapeRule) -> float:
    """Muon's shape factor: ``sqrt(max(1, m/n))`` (original) or ``0.2·sqrt(max(m, n))``."""
    m, n = shape[0], math.prod(shape[1:])
    if rule == "original":
        return math.sqrt(max(1.0, m / n))
    return 0.2 * math.sqrt(max(m, n))


@dataclass
class Orthogonalize:
    """Stateless stage: ``method`` ns (Newton–Schulz), svd (exact) or whiten (SWAN)."""

    method: Literal["ns", "svd", "whiten"] = "ns"
    coeffs: tuple[float, float, float] = MUON_COEFFS
    steps: int = 5
    eps: float = 1e-7
    dtype: torch.dtype = torch.bfloat16
    op_order: OpOrder = "torch_addmm"
    whiten_method: WhitenMethod = "eigh"  # whiten only
    beta: float = 0.5  # whiten ns/nsds only
    rescale: bool = False  # whiten only

    @property
    def name(self) -> str:
        return self.method

    def init(self, p: Tensor) -> dict[str, Tensor]:
        return {}

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        if self.method == "svd":
            return svd_orthogonalize(u)
        if self.method == "whiten":
            return whiten(u, self.whiten_method, self.steps, self.beta, self.rescale)
        return newton_schulz(
            u, self.coeffs, self.steps, self.eps, self.dtype, self.op_order
        ).float()

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return 0


@dataclass
class ShapeScale:
    """Muon shape scaling, on the lr in fp32 (torch) or on the update (KJ, ``where="update"``)."""

    rule: ShapeRule = "original"
    where: Literal["lr", "update"] = "lr"
    name: str = "shape_scale"

    def init(self, p: Tensor) -> dict[str, Tensor]:
        return {}

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        if self.where == "update":
            return u * shape_ratio(tuple(p.shape), self.rule)
        return u

    def scale_lr(self, lr: float, p: Tensor, state: dict[str, Tensor], step: int) -> float:
        if self.where == "lr":
            return lr * shape_ratio(tuple(p.shape), self.rule)
        return lr

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return 0
