"""Grouped fast path for routes whose whole pipeline is one lr-folding Adam stage.

fp32 state: multi-tensor (``torch._foreach_*``) kernels across parameters, as
``torch.optim.AdamW(foreach=True)`` (a large saving on CUDA, where per-tensor launches dominate
small steps). Block-wise 8/4-bit state: one fused pass per parameter
(:func:`optim_core.fused.quantized_adam_`, ``torch.compile``'d on CUDA by default, in
cache-sized chunks when eager); parameters
whose state stayed fp32 (fewer than 4096 elements) take the multi-tensor path. Same math and the
same state keys (``"0.adam.m"``, ``"0.adam.m.q"``, ...) as the per-parameter path
(:class:`optim_core.adaptive.Adam` with ``fold_lr``), so state dicts are interchangeable.

References: torch 2.13 ``torch/optim/adam.py::_multi_tensor_adam``; docs/references.md#adamw, #bnb-8bit, #torchao-low-bit.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from optim_core.adaptive import Adam
from optim_core.base import Fp32Codec, NativeCodec, Stage
from optim_core.fused import (
    AdamScalars,
    QFormat,
    adam_scalars,
    qformat,
    step_quantized_adam,
)
from optim_core.quantize import BlockwiseCodec

PREFIX = "0.adam."


def grouped_adam(stages: list[Stage]) -> Adam | None:
    """The Adam stage when ``stages`` is exactly one lr-folding Adam with fp32 or block-wise
    (signed m, unsigned v) state, else None."""
    if len(stages) != 1 or not isinstance(stages[0], Adam) or not stages[0].fold_lr:
        return None
    adam = stages[0]
    codec_v = adam.codec if adam.codec_v is None else adam.codec_v
    dense = (Fp32Codec, NativeCodec)  # native = fp32 on the fp32 params ``eligible`` admits
    if isinstance(adam.codec, dense) and isinstance(codec_v, dense):
        return adam
    if _blockwise_pair(adam.codec, codec_v):
        return adam
    return None


def _blockwise_pair(codec_m: Any, codec_v: Any) -> bool:
    return (
        isinstance(codec_m, BlockwiseCodec)
        and isinstance(codec_v, BlockwiseCodec)
        and codec_m.signed
        and not codec_v.signed
    )


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
    grads: list[Tensor] | None = None,
) -> None:
    """One Adam step for all ``params`` of ``group`` (states already initialised); ``grads``
    default to the parameters' ``.grad`` (given: e.g. the local shards of DTensor gradients)."""
    grads = [p.grad for p in params] if grads is None else grads  # type: ignore[misc]
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, 1.0)
    dense = [i for i, s in enumerate(states) if PREFIX + "m" in s]
    if len(dense) < len(states):  # block-quantized: one fused pass each (chunked when eager)
        fmts = _formats(adam, params[0].device)
        for p, g, state in zip(params, grads, states, strict=True):
            if PREFIX + "m" not in state:
                scalars = _scalars(adam, group, int(state["step"].item()))
                step_quantized_adam(p, state, PREFIX, fmts, scalars, g)
    if dense:
        pick = [params[i] for i in dense], [grads[i] for i in dense]
        _foreach_adam(adam, *pick, [states[i] for i in dense], group)


def _scalars(adam: Adam, group: dict[str, Any], t: int) -> AdamScalars:
    lr, wd, mode = group["lr"], group["weight_decay"], group["wd_mode"]
    return adam_scalars(adam.beta1, adam.beta2, adam.eps, adam.style, lr, wd, mode, t)


def _formats(adam: Adam, device: torch.device) -> tuple[QFormat, QFormat]:
    codec_v = adam.codec if adam.codec_v is None else adam.codec_v
    assert isinstance(adam.codec, BlockwiseCodec) and isinstance(codec_v, BlockwiseCodec)
    return qformat(adam.codec, device), qformat(codec_v, device)


def _foreach_adam(
    adam: Adam,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Any]],
    group: dict[str, Any],
) -> None:
    """Multi-tensor step of parameters with fp32 state (step counters already advanced)."""
    lr, wd, mode = group["lr"], group["weight_decay"], group["wd_mode"]
    ms = [s[PREFIX + "m"] for s in states]
    vs = [s[PREFIX + "v"] for s in states]
    ts = [int(s["step"].item()) for s in states]
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
