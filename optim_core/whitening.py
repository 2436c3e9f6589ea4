"""SWAN GradWhitening ``Δ = (G·Gᵀ)^{-1/2}·G``: the polar factor ``U·Vᵀ`` of ``G``.

Reference: Ma, Gong, Scetbon, Meeds, "SWAN: SGD with Normalization and Whitening Enables
Stateless LLM Training" (arXiv 2412.13148, ICML 2025); docs/references.md#swan. The paper defines the
operator exactly and computes it with a coupled Newton–Schulz inverse square root; no official
code exists. Methods:

- ``"eigh"`` (default): the exact operator from an eigendecomposition of the Gram matrix on the
  smaller side (``m×m`` with ``m = min(rows, cols)``): ``Δ = V·diag(λ^{-1/2})·Vᵀ·G``. The Gram is
  formed and decomposed in fp32 when it is well conditioned (``λ_min/λ_max >= 1e-3``) and in fp64
  otherwise (always for square matrices, which standardization makes singular). Directions with
  ``σ <= max(m, n)·eps_fp32·σ_max`` (numpy's ``matrix_rank`` tolerance) count as the null space
  and are mapped to 0 (the pseudo-inverse square root). Accuracy (tests/optim_core/
  test_oc_whitening.py): relative Frobenius error <= 1e-4 against the fp64 SVD polar factor
  for condition numbers up to 1e3, tall and wide.
- ``"ns"``: the paper's coupled Newton–Schulz iteration on ``A/‖A‖_F`` with a fixed ``steps``
  count and step factor ``beta`` (0.5 is the textbook iteration; a third-party implementation
  uses 0.8 with 10 steps). Approximate when ``A`` is ill-conditioned.
- ``"nsds"``: the third-party "Newton–Schulz with diagonal substitution" (β 0.4, 2 steps): the
  Z factor is replaced by its diagonal inside the iteration. Unverified against the paper.

Cost of ``"eigh"``: two ``m²n`` products and one ``m×m`` eigendecomposition, against Muon's
five Newton–Schulz iterations of ``4m²n + 2m³`` each.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

WhitenMethod = Literal["eigh", "ns", "nsds"]

FP32_MIN_EIG_RATIO = 1e-3  # below this λ_min/λ_max the fp32 eigh loses ~1e-4 accuracy


def _mat(u: Tensor) -> Tensor:
    if u.ndim < 2:
        raise ValueError(f"whitening needs a >=2-D update, got shape {tuple(u.shape)}")
    return u.reshape(u.shape[0], -1)


def _null_threshold(lam_max: Tensor, m: int, n: int) -> Tensor:
    """Eigenvalues of the Gram at or below this are the numerical null space."""
    return lam_max * (max(m, n) * torch.finfo(torch.float32).eps) ** 2


def _inv_sqrt_eigh(gram: Tensor, m: int, n: int) -> tuple[Tensor, Tensor]:
    """``(gram^{+1/2})^{-1}`` (pseudo-inverse square root) and ``λ_min/λ_max`` of the kept part."""
    lam, vec = torch.linalg.eigh(gram)
    lam_max = lam[-1].clamp_min(torch.finfo(gram.dtype).tiny)
    keep = lam > _null_threshold(lam_max, m, n)
    inv = torch.where(keep, lam.clamp_min(torch.finfo(gram.dtype).tiny).rsqrt(), 0.0)
    ratio = lam[0] / lam_max
    return (vec * inv) @ vec.T, ratio


def polar_eigh(x: Tensor) -> Tensor:
    """Pseudo-polar factor of a wide fp32 ``x`` (``m <= n``) via the ``m×m`` Gram (see module)."""
    m, n = x.shape
    if not torch.isfinite(x).all():  # a diverged run: NaN out (eigh would raise)
        return torch.full_like(x, float("nan"))
    if m < n:
        inv, ratio = _inv_sqrt_eigh(x @ x.T, m, n)
        if ratio.item() >= FP32_MIN_EIG_RATIO:
            return inv @ x
    xd = x.double()
    inv64, _ = _inv_sqrt_eigh(xd @ xd.T, m, n)
    return inv64.float() @ x


def inv_sqrt_newton_schulz(
    a: Tensor, steps: int = 10, beta: float = 0.5, ridge: float = 1e-6
) -> Tensor:
    """``(a/‖a‖_F + ridge·I)^{-1/2}`` by the coupled Newton–Schulz iteration (paper's method).

    ``Y₀ = a/‖a‖_F, Z₀ = I``; ``T = β·(3I − Z·Y)``, ``Y ← Y·T``, ``Z ← T·Z`` (β = 0.5 is the
    textbook iteration). The ridge bounds the growth along null directions.
    """
    n = a.size(0)
    eye = torch.eye(n, dtype=a.dtype, device=a.device)
    y = a / torch.linalg.matrix_norm(a).clamp_min(1e-30) + ridge * eye
    z = eye.clone()
    for _ in range(steps):
        t = beta * (3.0 * eye - z @ y)
        y = y @ t
        z = t @ z
    return z


def inv_sqrt_nsds(a: Tensor, steps: int = 2, beta: float = 0.4) -> Tensor:
    """Third-party NSDS: the coupled iteration with ``Z`` replaced by its diagonal ``z`` inside.

    ``Y₀ = a/‖a‖_F, Z₀ = I``; per step with ``z = diag(Z)``, ``y = diag(Y)``:
    ``Y ← β·Y·diag(3 − z⊙y)``, ``Z ← β·(3I − diag(z)·Y)·diag(z)`` (using the old ``Y``).
    """
    n = a.size(0)
    eye = torch.eye(n, dtype=a.dtype, device=a.device)
    y = a / torch.linalg.matrix_norm(a).clamp_min(1e-30)
    z = eye.clone()
    for _ in range(steps):
        zd, yd = z.diagonal(), y.diagonal()
        z_next = beta * (3.0 * eye - zd[:, None] * y) * zd[None, :]
        y = beta * y * (3.0 - zd * yd)[None, :]
        z = z_next
    return z


def _iterative(x: Tensor, method: WhitenMethod, steps: int, beta: float) -> Tensor:
    gram = x @ x.T
    norm = torch.linalg.matrix_norm(gram).clamp_min(1e-30)
    if method == "ns":
        z = inv_sqrt_newton_schulz(gram, steps, beta)
    else:
        z = inv_sqrt_nsds(gram, steps, beta)
    return z @ x / norm.sqrt()


def whiten(
    u: Tensor,
    method: WhitenMethod = "eigh",
    steps: int = 10,
    beta: float = 0.5,
    rescale: bool = False,
) -> Tensor:
    """GradWhitening of ``u`` on its smaller side (fp32 result, shape of ``u``).

    ``rescale=True`` multiplies the result to ``‖Δ‖_F = √(mn)`` (RMS 1), a third-party addition
    (the paper's operator has ``‖Δ‖_F = √rank``). ``steps``/``beta`` apply to ``ns``/``nsds``.
    """
    x = _mat(u).float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    out = polar_eigh(x) if method == "eigh" else _iterative(x, method, steps, beta)
    if tall:
        out = out.T
    if rescale:
        out = out * (math.sqrt(out.numel()) / torch.linalg.vector_norm(out).clamp_min(1e-30))
    return out.reshape(u.shape)
