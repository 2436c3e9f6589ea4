"""Q-GaLore's INT8 weights in the reference's simulation mode (docs/references.md#q-galore;
VITA-Group/Q-GaLore ``q_galore_adamw8bit_simulate.py``).

After every optimizer step the weight is put back on its asymmetric min-max integer grid, per
group of ``group_size`` flattened elements: ``scale = max(xmax − xmin, 1e-5)/(2^b − 1)``,
``zero = clamp(−round(xmin/scale), 0, 2^b − 1)``, codes ``clamp(floor(w/scale) + ξ + zero, 0,
2^b − 1)`` with ``ξ ~ Bernoulli(frac(w/scale))`` (stochastic rounding; ``round`` without it),
and ``w ← (code − zero)·scale``. The weight stays a float tensor holding grid values (the
simulation); :func:`weight_bytes` reports what INT8 storage takes: one byte per element plus an
fp32 scale and zero per group. The random draws are seeded per (parameter, step), so runs are
deterministic. A trailing partial group (numel not a multiple of the group) is its own group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from optim_core.quantize import quantize_minmax


def _grid(groups: Tensor, bits: int, gen: torch.Generator | None) -> Tensor:
    """Grid values of the rows of ``groups`` (fp32), stochastically rounded when ``gen``."""
    size = groups.size(1)
    _, scale, zero = quantize_minmax(groups, bits, size)
    scale, zero = scale.view(-1, 1), zero.view(-1, 1)
    x = groups / scale
    if gen is None:
        codes = torch.round(x)
    else:
        low = torch.floor(x)
        draw = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        codes = low + (draw < x - low).to(x.dtype)
    return ((codes + zero).clamp_(0, 2**bits - 1) - zero) * scale


def fake_quantize(
    w: Tensor, bits: int = 8, group_size: int = 256, gen: torch.Generator | None = None
) -> Tensor:
    """``w`` (any float dtype) put on its per-group min-max ``bits``-bit grid, as fp32."""
    flat = w.detach().float().reshape(-1)
    full = flat.numel() // group_size * group_size
    parts = []
    if full:
        parts.append(_grid(flat[:full].view(-1, group_size), bits, gen).view(-1))
    if full < flat.numel():
        parts.append(_grid(flat[full:].view(1, -1), bits, gen).view(-1))
    return torch.cat(parts).view(w.shape) if len(parts) > 1 else parts[0].view(w.shape)


def quantized_weight_bytes(shape: tuple[int, ...], bits: int, group_size: int) -> int:
    """Bytes of INT storage: ``ceil(bits/8)`` per element (unpacked) + fp32 scale and zero per
    group (a trailing partial group counts as one)."""
    n = 1
    for s in shape:
        n *= s
    groups = -(-n // group_size)
    return n * -(-bits // 8) + 8 * groups


@dataclass
class WeightQuant:
    """Stage (last in a route): passes the update through; :meth:`after_step` re-quantizes the
    weight once the optimizer has applied update and decay."""

    bits: int = 8
    group_size: int = 256
    stochastic: bool = True
    seed: int = 0
    name: str = "weight_quant"

    def init(self, p: Tensor) -> dict[str, Tensor]:
        return {}

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        return u

    def after_step(self, p: Tensor, step: int) -> None:
        gen = None
        if self.stochastic:
            gen = torch.Generator(device=p.device).manual_seed(self.seed * 1_000_003 + step)
        p.copy_(fake_quantize(p, self.bits, self.group_size, gen))

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return 0

    def weight_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return quantized_weight_bytes(shape, self.bits, self.group_size)
