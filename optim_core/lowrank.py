"""Low-rank gradient projection: GaLore, APOLLO / APOLLO-Mini, FRUGAL, Q-GaLore (optimizer side).

Pure tensor functions first (projectors, projection, APOLLO's norm-ratio scaling and Fira's
norm-growth limiter), then the wrapping stage :class:`LowRank`, whose inner stages run on the
projected gradient ``R`` (their state is low-rank).

Notation (docs/references.md#conventions): ``G`` is m×n in PyTorch layout. Side ``"right"`` (``m >= n`` under
GaLore's ``std`` rule): ``P`` is r×n, ``R = G·Pᵀ`` (m×r), back-projection ``N·P``. Side ``"left"``
(``m < n``): ``P`` is m×r, ``R = Pᵀ·G`` (r×n), back-projection ``P·N``. The projected side is
always the smaller dimension. ``k = step − 1``; the projector is rebuilt when ``k % T == 0``.

References:
    Zhao et al., "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection", 2024.
    Zhu et al., "APOLLO: SGD-like Memory, AdamW-level Performance", MLSys 2025.
    Zmushko et al., "FRUGAL: Memory-Efficient Optimization by Reducing State Overhead", 2025.
    Zhang et al., "Q-GaLore", arXiv 2407.08296.
    Sources: galore-torch 1.0 ``galore_projector.py``; apollo-torch 1.0.3 ``apollo.py``,
    ``random_projector.py``; docs/references.md#galore, #q-galore, #apollo, #frugal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from optim_core.base import (
    Stage,
    StateCodec,
    as_matrix_shape,
    slot_init,
    slot_read,
    slot_write,
    tensor_bytes,
)
from optim_core.chain import chain_lr, init_chain, run_chain

__all__ = [
    "LowRank",
    "gaussian_projector",
    "limit_norm_growth",
    "low_rank_shape",
    "next_seed",
    "norm_ratio",
    "project",
    "project_back",
    "projection_side",
    "resolve_rank",
    "svd_projector",
]

Side = Literal["left", "right"]
Basis = Literal["svd", "gaussian"]
Complement = Literal["drop", "sign"]
Output = Literal["project_back", "channel", "tensor"]

_SEED_ADVANCE = 15  # apollo-torch ADV_DEFAULT


# ---------------------------------------------------------------------------------------------
# pure tensor functions
# ---------------------------------------------------------------------------------------------


def resolve_rank(rank: int | float, shape: tuple[int, ...], name: str = "") -> int:
    """Integer rank for a matrix of ``shape``: an int as is, a fraction in (0, 1) of min(m, n).

    Raises:
        ValueError: rank < 1, a fraction outside (0, 1), or rank > min(m, n); names the param.
    """
    m, n = as_matrix_shape(tuple(shape))
    where = f"parameter {name!r} of shape {tuple(shape)}" if name else f"shape {tuple(shape)}"
    if isinstance(rank, float) and not rank.is_integer():
        if not 0.0 < rank < 1.0:
            raise ValueError(f"rank: a fraction must be in (0, 1), got {rank} for {where}")
        return max(1, round(rank * min(m, n)))
    r = int(rank)
    if r < 1:
        raise ValueError(f"rank: must be >= 1, got {r} for {where}")
    if r > min(m, n):
        raise ValueError(f"rank: {r} is larger than min(m, n) = {min(m, n)} for {where}")
    return r


def projection_side(shape: tuple[int, ...]) -> Side:
    """GaLore's ``std`` rule: project the smaller dimension (right if m >= n, else left)."""
    m, n = as_matrix_shape(tuple(shape))
    return "right" if m >= n else "left"


def low_rank_shape(shape: tuple[int, ...], rank: int) -> tuple[int, int]:
    """Shape of ``R`` (and of the inner stages' slots): (m, r) for right, (r, n) for left."""
    m, n = as_matrix_shape(tuple(shape))
    return (m, rank) if projection_side(shape) == "right" else (rank, n)


def projector_shape(shape: tuple[int, ...], rank: int) -> tuple[int, int]:
    """Shape of ``P``: (r, n) for right, (m, r) for left."""
    m, n = as_matrix_shape(tuple(shape))
    return (rank, n) if projection_side(shape) == "right" else (m, rank)


def _first_vector_len(shape: tuple[int, ...]) -> int:
    """Length of P's first vector (row 0 of a right P, column 0 of a left P)."""
    m, n = as_matrix_shape(tuple(shape))
    return n if projection_side(shape) == "right" else m


def svd_projector(g: Tensor, rank: int, side: Side) -> Tensor:
    """Top-r singular vectors of ``g`` (fp32 ``torch.linalg.svd``, thin): ``Vh[:r]`` or ``U[:, :r]``."""
    u, _, vh = torch.linalg.svd(g.float(), full_matrices=False)
    return vh[:rank, :] if side == "right" else u[:, :rank]


def gaussian_projector(
    m: int, n: int, rank: int, side: Side, seed: int, device: torch.device
) -> Tensor:
    """APOLLO's random projector ``randn(shape, generator seeded with seed) / sqrt(r)`` (fp32)."""
    shape = (rank, n) if side == "right" else (m, rank)
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32) / math.sqrt(rank)


def next_seed(seed: int, adv: int = _SEED_ADVANCE) -> int:
    """apollo-torch ``next_seed``: last of ``adv`` int64 draws of a CPU generator seeded ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, torch.iinfo(torch.int64).max, (adv,), generator=gen)
    return int(draws[-1].item())


def project(g: Tensor, p: Tensor, side: Side) -> Tensor:
    """``R = G·Pᵀ`` (right) or ``Pᵀ·G`` (left)."""
    return g @ p.t() if side == "right" else p.t() @ g


def project_back(r: Tensor, p: Tensor, side: Side) -> Tensor:
    """``R·P`` (right) or ``P·R`` (left): back to the full m×n shape."""
    return r @ p if side == "right" else p @ r


def norm_ratio(
    n: Tensor, r: Tensor, side: Side, granularity: Literal["channel", "tensor"], eps: float = 1e-8
) -> Tensor:
    """APOLLO's scaling factor ``‖N‖/(‖R‖+eps)``, broadcastable to the full gradient.

    ``channel``: one factor per index of the un-projected (larger) dimension — per row (m×1)
    for the right side, per column (n,) for the left side. ``tensor``: one scalar.
    """
    if granularity == "tensor":
        return torch.linalg.vector_norm(n) / (torch.linalg.vector_norm(r) + eps)
    dim = 1 if side == "right" else 0
    s = torch.linalg.vector_norm(n, dim=dim) / (torch.linalg.vector_norm(r, dim=dim) + eps)
    return s.unsqueeze(1) if side == "right" else s


def limit_norm_growth(
    s: Tensor, prev_norm: Tensor | None, gamma: float = 1.01, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """Fira's norm-growth limiter; returns ``(limited S, norm to remember)``.

    First call (``prev_norm is None``): S unchanged, remember ``‖S‖``. Later:
    ``ℓ = max(‖S‖/(prev+eps), γ)/γ``, return ``S/ℓ`` and ``‖S‖/ℓ`` (the post-limit norm).
    """
    norm = torch.linalg.vector_norm(s)
    if prev_norm is None:
        return s, norm
    limiter = torch.clamp(norm / (prev_norm + eps), min=gamma) / gamma
    return s / limiter, norm / limiter


# ---------------------------------------------------------------------------------------------
# the wrapping stage
# ---------------------------------------------------------------------------------------------


@dataclass
class LowRank:
    """Run ``inner`` stages on the low-rank projection of the update (GaLore/APOLLO/FRUGAL).

    Args:
        inner: stages applied to ``R`` (e.g. ``[Adam(...)]``); their slots are low-rank.
        rank: int, or a fraction in (0, 1) of min(m, n).
        basis: ``svd`` (top-r of the current gradient, GaLore) or ``gaussian`` (APOLLO; seeded
            with ``seed``, the parameter's 1-based index when built by the optimizer).
        refresh: T; the projector is rebuilt when ``(step − 1) % T == 0``.
        scale: multiplier of the output (GaLore α; APOLLO passes ``sqrt(α)``).
        complement: ``drop`` (GaLore) or ``sign``: add ``complement_scale·sign(G − Pback(P(G)))``
            (FRUGAL's state-free update of the residual).
        output: ``project_back`` (GaLore/FRUGAL) or APOLLO's ``channel``/``tensor`` norm-ratio
            scaling of the raw gradient (nothing is projected back).
        limiter: Fira/APOLLO norm-growth limiter (γ = 1.01) on the output (slot ``prev_norm``).
        scale_front: apply ``scale`` before the limiter (APOLLO ``scale_front``).
        reset_on_refresh: FRUGAL — at each refresh after the first, re-init the inner slots and
            restart the inner step counter (bias correction restarts).
        projector_codec: how ``P`` is stored; ``None`` = param dtype (GaLore), or e.g.
            ``MinMaxCodec(4, 256)`` (Q-GaLore INT4 projector).
        adaptive_refresh: Q-GaLore's lazy, layer-adaptive subspace update: at each refresh
            the signed cosine between the first projector vector of the new and previous P
            enters a FIFO of ``adapt_queue``; once full, a mean >= ``adapt_threshold``
            doubles this parameter's refresh interval (the FIFO is kept).
    State: ``P`` (projector, or its codec parts ``P.q``...), ``seed`` (int64, gaussian only),
    ``prev_norm`` (fp32 scalar, limiter only), ``interval`` / ``cos`` / ``cos_n`` (CPU int64,
    fp32 FIFO, int64; adaptive refresh only) and each inner stage's slots under
    ``"{j}.{name}.…"``.
    """

    inner: list[Stage]
    rank: int | float
    basis: Basis = "svd"
    refresh: int = 200
    scale: float = 1.0
    complement: Complement = "drop"
    output: Output = "project_back"
    limiter: bool = False
    scale_front: bool = False
    reset_on_refresh: bool = False
    complement_scale: float = 1.0
    projector_codec: StateCodec | None = None
    seed: int = 0
    adaptive_refresh: bool = False
    adapt_threshold: float = 0.4
    adapt_queue: int = 5
    name: str = field(default="lowrank")

    def __post_init__(self) -> None:
        if self.refresh < 1:
            raise ValueError(f"projection.refresh: must be >= 1, got {self.refresh}")
        if self.output != "project_back" and self.complement != "drop":
            raise ValueError("projection.complement: 'sign' needs output 'project_back'")
        if self.adaptive_refresh and self.reset_on_refresh:
            raise ValueError("adaptive_refresh: cannot be combined with reset_on_refresh")

    # -- init / accounting ---------------------------------------------------------------------

    def init(self, p: Tensor) -> dict[str, Tensor]:
        return self.init_at(p, self.seed)

    def init_at(self, p: Tensor, seed: int) -> dict[str, Tensor]:
        """Like :meth:`init` with an explicit gaussian seed (the optimizer passes the 1-based
        index of ``p`` over all its parameters, as apollo-torch does)."""
        shape = tuple(p.shape)
        r = resolve_rank(self.rank, shape)
        p_shape = projector_shape(shape, r)
        state: dict[str, Tensor] = {}
        if self.projector_codec is None:
            state["P"] = torch.zeros(p_shape, dtype=p.dtype, device=p.device)
        else:
            zeros = torch.zeros(p_shape, dtype=torch.float32, device=p.device)
            state.update(slot_init("P", zeros, self.projector_codec))
        if self.basis == "gaussian":
            state["seed"] = torch.tensor(seed, dtype=torch.int64, device="cpu")
        if self.limiter:
            state["prev_norm"] = torch.zeros((), dtype=torch.float32, device=p.device)
        if self.adaptive_refresh:
            state["interval"] = torch.tensor(self.refresh, dtype=torch.int64)
            state["cos"] = torch.zeros(self.adapt_queue, dtype=torch.float32)
            state["cos_n"] = torch.zeros((), dtype=torch.int64)
            state["vec"] = torch.zeros(_first_vector_len(shape), dtype=torch.float32)
        proxy = torch.zeros(low_rank_shape(shape, r), dtype=p.dtype, device=p.device)
        state.update(init_chain(self.inner, proxy))
        return state

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        r = resolve_rank(self.rank, tuple(shape))
        p_shape = projector_shape(tuple(shape), r)
        if self.projector_codec is None:
            total = tensor_bytes(p_shape, dtype)
        else:
            total = self.projector_codec.state_bytes(p_shape)
        total += 8 if self.basis == "gaussian" else 0
        total += 4 if self.limiter else 0
        if self.adaptive_refresh:  # interval, cos_n, the cos FIFO, the float first vector
            total += 16 + 4 * self.adapt_queue + 4 * _first_vector_len(tuple(shape))
        low = low_rank_shape(tuple(shape), r)
        return total + sum(stage.state_bytes(low, dtype) for stage in self.inner)

    # -- update --------------------------------------------------------------------------------

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        shape = tuple(u.shape)
        g = u.reshape(as_matrix_shape(shape))
        side = projection_side(shape)
        k = step - 1
        interval = int(state["interval"].item()) if self.adaptive_refresh else self.refresh
        if k % interval == 0:
            proj, exact = self._refresh(g, state, p, side, shape)
            if self.adaptive_refresh:
                self._adapt_interval(state, exact, side, first=k == 0)
            if self.reset_on_refresh and k > 0:
                self._reset_inner(state, p, shape)
        else:
            proj = self._read_projector(state, shape)
        r = project(g, proj, side)
        inner_step = k % self.refresh + 1 if self.reset_on_refresh else step
        n = self._run_inner(r, state, inner_step, p.dtype)
        if self.output == "project_back":
            out = project_back(n, proj, side)
            if self.scale != 1.0:
                out = out.mul_(self.scale)
            if self.complement == "sign":
                residual = g - project_back(r, proj, side)
                out = out.add_(torch.sign(residual), alpha=self.complement_scale)
        else:
            out = self._apollo_scale(g, n, r, side, state, step)
        return out.reshape(shape)

    def scale_lr(self, lr: float, p: Tensor, state: dict[str, Tensor], step: int) -> float:
        """Step size after the inner stages' own lr scaling (an inner ``Adam(fold_lr=True)``
        puts HF bias correction on the lr, after APOLLO's limiter, as the references do)."""
        inner_step = (step - 1) % self.refresh + 1 if self.reset_on_refresh else step
        return chain_lr(self.inner, lr, p, state, inner_step)

    def _refresh(
        self, g: Tensor, state: dict[str, Tensor], p: Tensor, side: Side, shape: tuple[int, ...]
    ) -> tuple[Tensor, Tensor]:
        """New projector: (the one to use, as stored; the float one before storage)."""
        r = resolve_rank(self.rank, shape)
        if self.basis == "svd":
            proj = svd_projector(g, r, side)
        else:
            seed = int(state["seed"].item())
            m, n = as_matrix_shape(shape)
            proj = gaussian_projector(m, n, r, side, seed, g.device)
            state["seed"].fill_(next_seed(seed))
        if self.projector_codec is None:
            state["P"].copy_(proj)
            return state["P"].float(), proj  # GaLore casts P to the param dtype
        slot_write(state, "P", proj, self.projector_codec)  # a refresh is a write, not an init
        return self._read_projector(state, shape), proj

    def _adapt_interval(
        self, state: dict[str, Tensor], proj: Tensor, side: Side, first: bool
    ) -> None:
        """Q-GaLore: push cos(first vector of the previous float P, of the new float P), as
        the reference keeps ``past_ortho_vector`` before quantizing; double T once the full
        FIFO's mean reaches the threshold."""
        b = proj[0] if side == "right" else proj[:, 0]
        a = state["vec"].to(b.device)
        cos = torch.dot(a, b) / (torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
        state["vec"].copy_(b)
        if first:
            return
        n = int(state["cos_n"].item())
        state["cos"][n % self.adapt_queue] = cos.to(state["cos"].device)
        state["cos_n"].fill_(n + 1)
        if n + 1 >= self.adapt_queue and state["cos"].mean().item() >= self.adapt_threshold:
            state["interval"].mul_(2)

    def _read_projector(self, state: dict[str, Tensor], shape: tuple[int, ...]) -> Tensor:
        p_shape = projector_shape(shape, resolve_rank(self.rank, shape))
        if self.projector_codec is None:
            return state["P"].float()
        return slot_read(state, "P", p_shape, self.projector_codec)

    def _run_inner(
        self, r: Tensor, state: dict[str, Tensor], step: int, dtype: torch.dtype
    ) -> Tensor:
        proxy = r if r.dtype == dtype else r.to(dtype)  # inner state follows the param dtype
        return run_chain(self.inner, r, state, proxy, step)

    def _reset_inner(self, state: dict[str, Tensor], p: Tensor, shape: tuple[int, ...]) -> None:
        low = low_rank_shape(shape, resolve_rank(self.rank, shape))
        proxy = torch.zeros(low, dtype=p.dtype, device=p.device)
        for key, t in init_chain(self.inner, proxy).items():
            state[key].copy_(t)

    def _apollo_scale(
        self, g: Tensor, n: Tensor, r: Tensor, side: Side, state: dict[str, Tensor], step: int
    ) -> Tensor:
        granularity: Literal["channel", "tensor"] = (
            "channel" if self.output == "channel" else "tensor"
        )
        s = g * norm_ratio(n, r, side, granularity)
        if self.scale_front:
            s = s * self.scale
        if self.limiter:
            prev = None if step == 1 else state["prev_norm"]
            s, norm = limit_norm_growth(s, prev)
            state["prev_norm"].copy_(norm)
        if not self.scale_front:
            s = s * self.scale
        return s
