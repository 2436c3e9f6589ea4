"""Multi-tensor (``torch._foreach_*``) fast path for routes whose whole pipeline is one fp32 Adam.

Same math and the same state keys (``"0.adam.m"``, ``"0.adam.v"``) as the per-parameter path
(:class:`optim_core.adaptive.Adam` with ``fold_lr``), so state dicts are interchangeable; it
only batches the elementwise kernels across parameters, as ``torch.optim.AdamW(foreach=True)``
does (a large saving on CUDA, where per-tensor kernel launches dominate small steps).

References: torch 2.13 ``torch/optim/adam.py::_multi_tensor_adam``; optimizers.md §1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from optim_core.adaptive import Adam
from optim_core.base import Fp32Codec, Stage


def grouped_adam(stages: list[Stage]) -> Adam | None:
    """The Adam stage when ``stages`` is exactly one fp32, lr-folding Adam, else None."""
    if len(stages) != 1 or not isinstance(stages[0], Adam):
        return None
    adam = stages[0]
    codecs = (adam.codec, adam.codec if adam.codec_v is None else adam.codec_v)
    if not adam.fold_lr or not all(isinstance(c, Fp32Codec) for c in codecs):
        return None
    return adam


def eligible(params: list[Tensor], mode: str) -> bool:
    """fp32 parameters with grads on one device and decay not coupled."""
    if not params or mode == "coupled":
        return False
    device = params[0].device
    return all(
        p.dtype == torch.float32 and p.grad is not None and p.device == device for p in params
    )


def adam_group_step(
    adam: Adam,
    params: list[Tensor],
    states: list[dict[str, Any]],
    group: dict[str, Any],
) -> None:
    """One Adam step for all ``params`` of ``group`` (states already initialised)."""
    lr, wd, mode = group["lr"], group["weight_decay"], group["wd_mode"]
    grads = [p.grad for p in params]
    ms = [s["0.adam.m"] for s in states]
    vs = [s["0.adam.v"] for s in states]
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, 1.0)
    ts = [int(t.item()) for t in steps]
    if mode == "decoupled_before" and wd != 0:
        torch._foreach_mul_(params, 1.0 - lr * wd)
    torch._foreach_lerp_(ms, grads, 1.0 - adam.beta1)  # type: ignore[arg-type]
    torch._foreach_mul_(vs, adam.beta2)
    torch._foreach_addcmul_(vs, grads, grads, 1.0 - adam.beta2)  # type: ignore[arg-type]
    denom = torch._foreach_sqrt(vs)
    if adam.style == "torch":
        torch._foreach_div_(denom, [math.sqrt(1.0 - adam.beta2**t) for t in ts])
        step_sizes = [-lr / (1.0 - adam.beta1**t) for t in ts]
    else:
        step_sizes = [-lr * math.sqrt(1.0 - adam.beta2**t) / (1.0 - adam.beta1**t) for t in ts]
    torch._foreach_add_(denom, adam.eps)
    torch._foreach_addcdiv_(params, ms, denom, step_sizes)
    if mode == "decoupled_after" and wd != 0:
        torch._foreach_mul_(params, 1.0 - lr * wd)
