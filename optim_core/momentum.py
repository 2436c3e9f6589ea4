"""Momentum accumulators: EMA (lerp), mul-add EMA, heavy-ball, Nesterov and Lion outputs.

Pure functions update the buffer in place and return it (as ``muon_update`` in KJ Muon); the
:class:`Ema` stage wires one of them to a state slot stored through a :class:`StateCodec`.

References: docs/references.md#conventions (``EMA_β``, ``ACC_β``), #sgd (torch SGD), #signum, #lion,
#muon (lerp momentum and Nesterov).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from optim_core.base import (
    FP32_CODEC,
    StateCodec,
    resolve_codec,
    slot_init,
    slot_read,
    slot_write,
)

EmaForm = Literal["lerp", "mul_add", "heavy_ball"]
EmaOutput = Literal["state", "nesterov_lerp", "nesterov_add", "interp"]


def ema_lerp_(m: Tensor, g: Tensor, beta: float) -> Tensor:
    """``m ← β·m + (1−β)·g`` computed as ``m.lerp_(g, 1−β)`` (torch Adam / Muon form)."""
    return m.lerp_(g, 1.0 - beta)


def ema_mul_add_(m: Tensor, g: Tensor, beta: float) -> Tensor:
    """``m ← β·m + (1−β)·g`` computed as ``m.mul_(β).add_(g, alpha=1−β)`` (lion-pytorch form)."""
    return m.mul_(beta).add_(g, alpha=1.0 - beta)


def heavy_ball_(b: Tensor, g: Tensor, mu: float, dampening: float = 0.0) -> Tensor:
    """``b ← μ·b + (1−τ)·g`` (torch SGD momentum buffer)."""
    return b.mul_(mu).add_(g, alpha=1.0 - dampening)


def nesterov_lerp(g: Tensor, b: Tensor, mu: float) -> Tensor:
    """Muon's Nesterov output ``(1−μ)·g + μ·b`` (``g.lerp(b, μ)``)."""
    return g.lerp(b, mu)


def nesterov_add(g: Tensor, b: Tensor, mu: float) -> Tensor:
    """torch SGD's Nesterov output ``g + μ·b``."""
    return g.add(b, alpha=mu)


def lion_interp(m: Tensor, g: Tensor, beta1: float) -> Tensor:
    """Lion's update direction before ``sign``: ``β1·m + (1−β1)·g`` (m is the *old* state)."""
    return m.mul(beta1).add_(g, alpha=1.0 - beta1)


@dataclass
class Ema:
    """Stateful momentum stage with slot ``buf`` (one value per parameter element).

    ``form`` picks the accumulator, ``init="first"`` copies the first input into the buffer
    (torch SGD), ``output`` picks what flows on: the buffer, a Nesterov mix, or Lion's
    interpolation with ``interp_beta`` (computed from the old buffer before it is updated).
    """

    beta: float = 0.9
    form: EmaForm = "lerp"
    dampening: float = 0.0
    init_first: bool = False
    output: EmaOutput = "state"
    interp_beta: float = 0.9
    codec: StateCodec = field(default=FP32_CODEC)
    name: str = "ema"

    def init(self, p: Tensor) -> dict[str, Tensor]:
        codec = resolve_codec(self.codec, p.dtype)
        return slot_init("buf", torch.zeros_like(p, dtype=torch.float32), codec)

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        codec = resolve_codec(self.codec, p.dtype)
        buf = slot_read(state, "buf", tuple(p.shape), codec)
        out = lion_interp(buf, u, self.interp_beta) if self.output == "interp" else None
        if self.init_first and step == 1:
            buf.copy_(u)
        elif self.form == "lerp":
            ema_lerp_(buf, u, self.beta)
        elif self.form == "mul_add":
            ema_mul_add_(buf, u, self.beta)
        else:
            heavy_ball_(buf, u, self.beta, self.dampening)
        slot_write(state, "buf", buf, codec)
        if out is not None:
            return out
        if self.output == "nesterov_lerp":
            return nesterov_lerp(u, buf, self.beta)
        if self.output == "nesterov_add":
            return nesterov_add(u, buf, self.beta)
        return buf  # read-only downstream (base.py convention), so no copy

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return resolve_codec(self.codec, dtype).state_bytes(shape)
