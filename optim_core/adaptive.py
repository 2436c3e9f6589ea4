"""Second moments and Adam-style preconditioning: Adam (torch/HF ε), Adafactor (factored).

References: docs/references.md#conventions (torch vs HF ε placement), #adamw (torch AdamW),
#adafactor (torch.optim.Adafactor), #adam-mini (Adam-mini blocks), #vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from optim_core.base import (
    FP32_CODEC,
    NATIVE_CODEC,
    StateCodec,
    resolve_codec,
    slot_init,
    slot_read,
    slot_write,
)

AdamStyle = Literal["torch", "hf"]


def second_moment_(v: Tensor, g: Tensor, beta2: float) -> Tensor:
    """``v ← β2·v + (1−β2)·g⊙g`` in place."""
    return v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)


def adam_direction(
    m: Tensor, v: Tensor, step: int, beta2: float, eps: float, style: AdamStyle
) -> Tensor:
    """``m / denom`` without the ``1/bc1`` factor (see :func:`adam_step_factor`).

    torch: ``denom = sqrt(v)/sqrt(bc2) + ε``; HF: ``denom = sqrt(v) + ε``.
    """
    denom = v.sqrt()
    if style == "torch":
        denom.div_(math.sqrt(1.0 - beta2**step))
    denom.add_(eps)
    return torch.div(m, denom, out=denom)


def adam_step_factor(step: int, beta1: float, beta2: float, style: AdamStyle) -> float:
    """Scalar multiplying :func:`adam_direction`: ``1/bc1`` (torch) or ``sqrt(bc2)/bc1`` (HF)."""
    bc1 = 1.0 - beta1**step
    if style == "torch":
        return 1.0 / bc1
    return math.sqrt(1.0 - beta2**step) / bc1


@dataclass
class Adam:
    """Adam direction with slots ``m`` (stored through ``codec``) and ``v`` (``codec_v``,
    default ``codec``; quantized codecs use a signed map for m and an unsigned one for v).

    With ``fold_lr=True`` (set by the compiler when Adam is the last stage) the bias-correction
    factor is applied to the lr (``scale_lr``) instead of the update, saving one pass.
    """

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    style: AdamStyle = "torch"
    codec: StateCodec = field(default=FP32_CODEC)
    fold_lr: bool = False
    codec_v: StateCodec | None = None
    name: str = "adam"

    def _codecs(self, dtype: torch.dtype) -> tuple[StateCodec, StateCodec]:
        codec_v = self.codec if self.codec_v is None else self.codec_v
        return resolve_codec(self.codec, dtype), resolve_codec(codec_v, dtype)

    def init(self, p: Tensor) -> dict[str, Tensor]:
        zeros = torch.zeros_like(p, dtype=torch.float32)
        codec_m, codec_v = self._codecs(p.dtype)
        return {**slot_init("m", zeros, codec_m), **slot_init("v", zeros.clone(), codec_v)}

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        shape = tuple(p.shape)
        codec_m, codec_v = self._codecs(p.dtype)
        m = slot_read(state, "m", shape, codec_m)
        v = slot_read(state, "v", shape, codec_v)
        m.lerp_(u, 1.0 - self.beta1)
        second_moment_(v, u, self.beta2)
        slot_write(state, "m", m, codec_m)
        slot_write(state, "v", v, codec_v)
        out = adam_direction(m, v, step, self.beta2, self.eps, self.style)
        if not self.fold_lr:
            out.mul_(adam_step_factor(step, self.beta1, self.beta2, self.style))
        return out

    def scale_lr(self, lr: float, p: Tensor, state: dict[str, Tensor], step: int) -> float:
        if self.fold_lr:
            return lr * adam_step_factor(step, self.beta1, self.beta2, self.style)
        return lr

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        codec_m, codec_v = self._codecs(dtype)
        return codec_m.state_bytes(shape) + codec_v.state_bytes(shape)


def factored_update_(
    row_var: Tensor, col_var: Tensor, g: Tensor, weight: float, eps1: float
) -> Tensor:
    """Adafactor (torch): update row/col EMAs of g² in place; return ``V̂ = r·c / max(mean r, ε1)``."""
    row_mean = torch.linalg.vector_norm(g, dim=-1, keepdim=True).square_().div_(g.size(-1))
    row_var.lerp_(row_mean, weight)
    col_mean = torch.linalg.vector_norm(g, dim=-2, keepdim=True).square_().div_(g.size(-2))
    col_var.lerp_(col_mean, weight)
    var = row_var @ col_var
    return var.div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))


@dataclass
class Adafactor:
    """torch.optim.Adafactor: factored second moment (rows ``r``, cols ``c``; vectors ``v``),
    update clipping to RMS ``d`` and the relative step ``max(ε2, RMS(W))·min(η, 1/√t)``."""

    beta2_decay: float = -0.8
    eps1: float | None = None  # None -> finfo(param dtype).eps, as torch
    eps2: float = 1e-3
    d: float = 1.0
    codec: StateCodec = field(default=NATIVE_CODEC)  # torch keeps the param dtype
    name: str = "adafactor"

    def _slots(self, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        if len(shape) >= 2:
            return {"row": (*shape[:-1], 1), "col": (*shape[:-2], 1, shape[-1])}
        return {"v": shape}

    def init(self, p: Tensor) -> dict[str, Tensor]:
        codec = resolve_codec(self.codec, p.dtype)
        out: dict[str, Tensor] = {}
        for slot, shape in self._slots(tuple(p.shape)).items():
            zeros = torch.zeros(shape, dtype=torch.float32, device=p.device)
            out.update(slot_init(slot, zeros, codec))
        return out

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        weight = float(step) ** self.beta2_decay
        eps1 = torch.finfo(p.dtype).eps if self.eps1 is None else self.eps1
        codec = resolve_codec(self.codec, p.dtype)
        slots = self._slots(tuple(p.shape))
        vals = {k: slot_read(state, k, shape, codec) for k, shape in slots.items()}
        if u.ndim >= 2:
            var = factored_update_(vals["row"], vals["col"], u, weight, eps1)
        else:
            vals["v"].lerp_(u * u, weight)
            var = vals["v"].clone()
        for k, t in vals.items():
            slot_write(state, k, t, codec)
        out = var.clamp_(min=eps1 * eps1).rsqrt_().mul_(u)
        rms = torch.linalg.vector_norm(out).item() / (math.sqrt(out.numel()) * self.d)
        # the relative step needs RMS(W) before this step's decay (torch order)
        state_scale = max(self.eps2, torch.linalg.vector_norm(p).item() / math.sqrt(p.numel()))
        self._alpha = state_scale / max(1.0, rms)
        return out

    def scale_lr(self, lr: float, p: Tensor, state: dict[str, Tensor], step: int) -> float:
        return self._alpha * min(lr, 1.0 / math.sqrt(step))

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        codec = resolve_codec(self.codec, dtype)
        return sum(codec.state_bytes(s) for s in self._slots(shape).values())


def block_mean_sq(g: Tensor, block: str, n_heads: int) -> Tensor:
    """Mean of g² per Adam-mini block: ``row`` (m×1), ``head`` (n_heads×1 over the rows of each
    head), ``tensor`` (a scalar)."""
    if block == "tensor":
        return g.square().mean()
    rows = g.reshape(g.shape[0], -1) if block == "row" else g.reshape(n_heads, -1)
    return rows.square().mean(dim=1, keepdim=True)


def _block_shape(shape: tuple[int, ...], block: str, n_heads: int) -> tuple[int, ...]:
    if block == "tensor":
        return ()
    if block == "head":
        if shape[0] % n_heads:
            raise ValueError(f"adam_mini: {shape[0]} rows not divisible by n_heads={n_heads}")
        return (n_heads, 1)
    return (shape[0], 1)


@dataclass
class AdamMini:
    """Adam-mini: Adam's first moment per element, one second moment per block.

    References: Zhang et al., "Adam-mini: Use Fewer Learning Rates To Gain More", ICLR 2025;
    docs/references.md#adam-mini (q/k per head, other matrices per row, norms one scalar).
    """

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    block: Literal["row", "head", "tensor"] = "row"
    n_heads: int = 1
    codec: StateCodec = field(default=NATIVE_CODEC)  # adam-mini keeps the param dtype
    name: str = "adam_mini"

    def init(self, p: Tensor) -> dict[str, Tensor]:
        vshape = _block_shape(tuple(p.shape), self.block, self.n_heads)
        codec = resolve_codec(self.codec, p.dtype)
        zeros_v = torch.zeros(vshape, dtype=torch.float32, device=p.device)
        m0 = torch.zeros_like(p, dtype=torch.float32)
        return {**slot_init("m", m0, codec), **slot_init("v", zeros_v, codec)}

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        codec = resolve_codec(self.codec, p.dtype)
        vshape = _block_shape(tuple(p.shape), self.block, self.n_heads)
        m = slot_read(state, "m", tuple(p.shape), codec)
        v = slot_read(state, "v", vshape, codec)
        m.lerp_(u, 1.0 - self.beta1)
        v.mul_(self.beta2).add_(block_mean_sq(u, self.block, self.n_heads), alpha=1 - self.beta2)
        slot_write(state, "m", m, codec)
        slot_write(state, "v", v, codec)
        bc1 = 1.0 - self.beta1**step
        denom = v.sqrt().div_(math.sqrt(1.0 - self.beta2**step)).add_(self.eps)
        rows = m.reshape(denom.shape[0], -1) if denom.ndim else m
        return (rows / denom).reshape(m.shape).div_(bc1)

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        codec = resolve_codec(self.codec, dtype)
        vshape = _block_shape(shape, self.block, self.n_heads)
        return codec.state_bytes(shape) + codec.state_bytes(vshape)
