"""Small block-quantized Adam parameters stepped as one flat buffer.

A model has many small matrices (a LLaMA layer's q/k/v/o, norms' neighbours), and the eager
quantized step (:func:`optim_core.fused.quantized_adam_`) costs about 25 torch calls per
parameter whatever its size, so on small tensors the calls, not the bytes, set the time. Here
the parameters whose sizes are whole blocks of both formats are concatenated (weights,
gradients, codes, block scales), stepped by ONE call of the same pure function, and the results
are copied back into each parameter and its own state tensors (state dicts keep their layout).

Bit-identical to the per-parameter pass: every block lies inside one parameter (sizes are block
multiples; 4-bit codes pack in pairs inside a block), the code lookup and Adam are elementwise,
and the scalars are shared (parameters are grouped by step count). Parameters above
:data:`FLAT_MAX_NUMEL` keep the per-parameter pass: for them the concatenation copies would
cost more than the calls they save.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor

from optim_core.fused import AdamScalars, QFormat, quantized_adam_

__all__ = ["FLAT_MAX_NUMEL", "SLOTS", "flat_groups", "step_flat"]

FLAT_MAX_NUMEL = 1 << 16
SLOTS = ("m.q", "m.scale", "v.q", "v.scale")


def _fits(numel: int, fmts: tuple[QFormat, QFormat]) -> bool:
    return numel <= FLAT_MAX_NUMEL and all(numel % f.block == 0 for f in fmts)


def flat_groups(
    sizes: list[int], steps: list[int], fmts: tuple[QFormat, QFormat]
) -> dict[int, list[int]]:
    """Indices of the parameters that can share a flat step, by step count (2 or more each)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, (n, t) in enumerate(zip(sizes, steps, strict=True)):
        if _fits(n, fmts):
            groups[t].append(i)
    return {t: idx for t, idx in groups.items() if len(idx) > 1}


def _cat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _scatter_back(flat: Tensor, targets: list[Tensor]) -> None:
    """Copy consecutive pieces of ``flat`` into ``targets`` (each keeps its shape)."""
    pieces = flat.split([t.numel() for t in targets])
    torch._foreach_copy_(targets, [x.view_as(t) for x, t in zip(pieces, targets, strict=True)])


def step_flat(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Any]],
    prefix: str,
    fmts: tuple[QFormat, QFormat],
    scalars: AdamScalars,
) -> None:
    """One quantized Adam step of ``params`` (same step count) through one flat buffer."""
    weights = _cat(params)
    parts = [_cat([s[prefix + slot] for s in states]) for slot in SLOTS]
    out = quantized_adam_(
        weights, _cat(grads), (parts[0], parts[1]), (parts[2], parts[3]), fmts, scalars
    )
    _scatter_back(weights, params)
    for slot, new in zip(SLOTS, out, strict=True):
        _scatter_back(new, [s[prefix + slot] for s in states])
