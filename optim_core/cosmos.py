"""COSMOS (Liu et al., arXiv 2502.17410): a one-sided eigen-Adam on a tracked rank-r input
subspace plus a Muon step on its orthogonal complement, for hidden matrices.

Reference: docs/references.md#cosmos (lliu606/COSMOS ``COSMOS_optim.py``, with Nesterov), #pitfalls 5-6.
Per matrix ``G`` (m×n, flattened to ``(shape[0], -1)``), rank ``r = min(rank, m, n)``:

1. ``M ← β1·M + G``; ``c1 = (1−β1^t)/(1−β1)``, ``bc2 = 1−β2^t``.
2. Tracker (``U`` n×r orthonormal, ``S`` r×r): step 1 ``U = top-r eigvecs of GᵀG`` (SVD),
   ``S = (1−β2)·(GU)ᵀ(GU)``; later ``U' = QR(β2·U·S + (1−β2)·Gᵀ(GU)).Q``, ``T = Uᵀ U'``,
   ``S = β2·Tᵀ S T + (1−β2)·(GU')ᵀ(GU')``.
3. ``V ← β2·V + (1−β2)·(GU)²`` (m×r, raw G, new U).
4. ``Ĝ = (G + β1·M)/(1 + β1·c1)`` (Nesterov) or ``M/c1``.
5. ``A = [(ĜU) ⊘ (√V/√bc2 + ε)]·Uᵀ``.
6. ``B = NS5(Ĝ − ĜUUᵀ)`` (COSMOS cubic op order, bf16), ``B ← √(mn)·B/(‖B‖_F + ε)`` in fp32.
7. update ``= ratio·√(mn)·D/(‖D‖_F + ε)`` with ``D = A + γ·B``; the optimizer then applies
   decoupled decay (before) and ``W −= η·update``.

State per matrix (fp32): ``M`` m·n, ``U`` n·r, ``S`` r², ``V`` m·r.

Every other parameter (vectors, matrices with more than 10,000 rows) takes the reference's Adam
branch, :class:`CosmosAdam`: ``m ← β1·m + 0.1·g`` (a hard-coded 0.1 gradient weight),
``v ← β2·v + (1−β2)·g²``, step ``η/(1 − 0.9^t) · m/(√v/√bc2 + ε)`` (``bc2 = 1−β2^t``); with
β1 = 0.95 this is twice torch Adam's first moment and a 0.9-based bias correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from optim_core.adaptive import adam_direction, second_moment_
from optim_core.base import as_matrix_shape, tensor_bytes
from optim_core.orthogonalize import MUON_COEFFS

__all__ = [
    "AUX_BC_BETA",
    "AUX_GRAD_WEIGHT",
    "Cosmos",
    "CosmosAdam",
    "cosmos_direction",
    "cosmos_newton_schulz",
    "cosmos_rank",
    "frobenius_rescale",
    "matmul_bf16_via_fp32",
    "second_moment_update_",
    "tracker_init",
    "tracker_update",
]


AUX_GRAD_WEIGHT = 0.1  # COSMOS_optim.py: exp_avg.mul_(beta1).add_(grad, alpha=0.1)
AUX_BC_BETA = 0.9  # COSMOS_optim.py: bias_correction1 = 1 - 0.9 ** step


def cosmos_rank(shape: tuple[int, ...], rank: int) -> int:
    """Effective subspace rank ``min(rank, m, n)`` of a (flattened) matrix shape."""
    m, n = as_matrix_shape(shape)
    return min(rank, m, n)


def tracker_init(g: Tensor, r: int, beta2: float) -> tuple[Tensor, Tensor]:
    """Step 1: ``U`` = top-``r`` eigenvectors of ``GᵀG`` (SVD), ``S = (1−β2)·(GU)ᵀ(GU)``.

    A non-finite gradient (diverged run) yields NaN ``U``/``S`` instead of an SVD error.
    """
    gram = g.T @ g
    if not torch.isfinite(gram).all():
        nan = float("nan")
        return g.new_full((g.size(1), r), nan), g.new_full((r, r), nan)
    u_full, _, _ = torch.linalg.svd(gram, full_matrices=False)
    u = u_full[:, :r].contiguous()
    gu = g @ u
    return u, (1.0 - beta2) * (gu.T @ gu)


def tracker_update(g: Tensor, u: Tensor, s: Tensor, beta2: float) -> tuple[Tensor, Tensor]:
    """Step t > 1: one power-QR step of the EMA of ``GᵀG`` and ``S`` rotated into the new basis."""
    p = beta2 * (u @ s) + (1.0 - beta2) * (g.T @ (g @ u))
    u_new, _ = torch.linalg.qr(p, mode="reduced")
    t = u.T @ u_new
    gu = g @ u_new
    s_new = beta2 * (t.T @ s @ t) + (1.0 - beta2) * (gu.T @ gu)
    return u_new, s_new


def second_moment_update_(v: Tensor, g: Tensor, u: Tensor, beta2: float) -> None:
    """``V ← β2·V + (1−β2)·(GU)²`` in place (projected raw gradient)."""
    low = g @ u
    v.mul_(beta2).addcmul_(low, low, value=1.0 - beta2)


def matmul_bf16_via_fp32(a: Tensor, b: Tensor) -> Tensor:
    """bf16 ``a @ b`` as a bf16 GEMM computes it (exact products, fp32 accumulation, one
    rounding to bf16), through an fp32 GEMM: bf16 inputs are exact in fp32 and so are their
    products. On CPUs without native bf16 GEMM this is 4-40x faster than ``a @ b`` in bf16
    (measured in docs/benchmarks.md); only the summation order can differ."""
    return (a.float() @ b.float()).to(torch.bfloat16)


def cosmos_newton_schulz(
    x: Tensor,
    steps: int = 5,
    eps: float = 1e-7,
    dtype: torch.dtype = torch.bfloat16,
    coeffs: tuple[float, float, float] = MUON_COEFFS,
) -> Tensor:
    """Quintic Newton–Schulz in COSMOS op order (``X = aX + b·AX + (c·A)(AX)``, ``A = XXᵀ``),
    Frobenius pre-normalisation ``X/(‖X‖ + eps)`` in ``dtype``; returns fp32 (docs/references.md#pitfalls 5). bf16
    products on CPU go through :func:`matmul_bf16_via_fp32` (same rounding points)."""
    a, b, c = coeffs
    mm = matmul_bf16_via_fp32 if dtype == torch.bfloat16 and x.device.type == "cpu" else _mm
    y = x.to(dtype)
    y = y / (y.norm() + eps)
    tall = y.size(0) > y.size(1)
    if tall:
        y = y.T
    for _ in range(steps):
        gram = mm(y, y.T)
        gy = mm(gram, y)
        y = a * y + b * gy + mm(c * gram, gy)
    if tall:
        y = y.T
    return y.float()


def _mm(a: Tensor, b: Tensor) -> Tensor:
    return a @ b


def frobenius_rescale(x: Tensor, target: float, eps: float) -> Tensor:
    """``target·x/(‖x‖_F + eps)``."""
    return x * (target / (torch.linalg.vector_norm(x) + eps))


def cosmos_direction(
    g_hat: Tensor,
    u: Tensor,
    v: Tensor,
    bc2: float,
    eps: float,
    gamma: float,
    ns_dtype: torch.dtype = torch.bfloat16,
) -> Tensor:
    """``D/(‖D‖_F + ε)·√(mn)`` with ``D = A + γ·B`` (steps 5-7 above, without ``ratio``)."""
    scale = math.sqrt(g_hat.numel())
    low = g_hat @ u
    a = (low / (v.sqrt() / math.sqrt(bc2) + eps)) @ u.T
    resid = g_hat - low @ u.T
    b = frobenius_rescale(cosmos_newton_schulz(resid, dtype=ns_dtype), scale, eps)
    return frobenius_rescale(a + gamma * b, scale, eps)


@dataclass
class Cosmos:
    """COSMOS stage for one hidden matrix (slots ``M``, ``U``, ``S``, ``V``; all fp32)."""

    beta1: float = 0.95
    beta2: float = 0.95
    eps: float = 1e-8
    rank: int = 64
    gamma: float = 0.2
    ratio: float = 0.2
    nesterov: bool = True
    ns_dtype: torch.dtype = torch.bfloat16
    name: str = "cosmos"

    def init(self, p: Tensor) -> dict[str, Tensor]:
        m, n = as_matrix_shape(tuple(p.shape))
        r = cosmos_rank(tuple(p.shape), self.rank)
        sizes = {"M": (m, n), "U": (n, r), "S": (r, r), "V": (m, r)}
        return {k: torch.zeros(s, dtype=torch.float32, device=p.device) for k, s in sizes.items()}

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        g = u.reshape(u.shape[0], -1).float()
        b1, b2 = self.beta1, self.beta2
        mom = state["M"]
        mom.mul_(b1).add_(g)
        c1 = (1.0 - b1**step) / (1.0 - b1)
        if step == 1:
            basis, s = tracker_init(g, state["U"].size(1), b2)
        else:
            basis, s = tracker_update(g, state["U"], state["S"], b2)
        state["U"].copy_(basis)
        state["S"].copy_(s)
        second_moment_update_(state["V"], g, basis, b2)
        g_hat = (g + b1 * mom) / (1.0 + b1 * c1) if self.nesterov else mom / c1
        d = cosmos_direction(
            g_hat, basis, state["V"], 1.0 - b2**step, self.eps, self.gamma, self.ns_dtype
        )
        return (self.ratio * d).reshape(u.shape)

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        m, n = as_matrix_shape(shape)
        r = cosmos_rank(shape, self.rank)
        return tensor_bytes((m * n + n * r + r * r + m * r,), torch.float32)


@dataclass
class CosmosAdam:
    """The reference's Adam branch for parameters COSMOS does not handle (slots ``m``, ``v``).

    ``m ← β1·m + w·g`` with ``w = 0.1``, torch-style denominator, update ``m/denom/(1 − 0.9^t)``
    (the optimizer applies decay before and ``W −= η·update``); as ``COSMOS_optim.py``.
    """

    beta1: float = 0.95
    beta2: float = 0.95
    eps: float = 1e-8
    grad_weight: float = AUX_GRAD_WEIGHT
    bc_beta: float = AUX_BC_BETA
    name: str = "cosmos_adam"

    def init(self, p: Tensor) -> dict[str, Tensor]:
        zeros = torch.zeros_like(p, dtype=torch.float32)
        return {"m": zeros, "v": zeros.clone()}

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        m, v = state["m"], state["v"]
        m.mul_(self.beta1).add_(u, alpha=self.grad_weight)
        second_moment_(v, u, self.beta2)
        out = adam_direction(m, v, step, self.beta2, self.eps, "torch")
        return out.div_(1.0 - self.bc_beta**step)

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return 2 * tensor_bytes(shape, torch.float32)
