"""One-pass Adam step on block-wise quantized state (8/4-bit), eager or ``torch.compile``'d.

:func:`quantized_adam_` is the whole step of one parameter as a pure tensor function:
decode m and v, ``m ← lerp(m, g, 1−β1)``, ``v ← β2·v + (1−β2)·g²``, requantise both (block
absmax + code lookup), then decoupled decay and ``W ← W − η/bc1 · m/(√v/√bc2 + ε)`` with the
un-requantised m, v (bitsandbytes / torchao semantics, torch-style ε). The grouped optimizer
path (:mod:`optim_core.grouped`) calls it for every quantized parameter of a route whose
pipeline is a single Adam stage; the numbers equal the per-stage path (:class:`Adam` with
quantized codecs) up to ``addcdiv``'s rounding.

Compiled path: with :func:`set_compile` ``True`` (default ``None`` = on for CUDA, off on CPU),
the function goes through ``torch.compile(dynamic=True)`` once per process, so parameter sizes
share a few graphs (torchao compiles its low-bit step the same way). Changing scalars (lr, bias
corrections) are passed as 0-d tensors so they never recompile. Compile time lands in the first
step; benchmarks report it separately. On the 2-core CPU VM the compiled step did not pay:
first step 36 s CPU (150 s wall), then 0.6 s per step against 0.2 s eager (docs/benchmarks.md),
hence off on CPU. The CUDA path is untested here (no GPU in that session; ``-m gpu`` tests).

References: docs/references.md#bnb-8bit (bitsandbytes 8-bit Adam), #torchao-low-bit (torchao).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import torch
from torch import Tensor

from optim_core.quantize import (
    BlockwiseCodec,
    dequantize_blockwise,
    lut_codes,
    maps_of,
    normalize_blocks,
    pack_nibbles,
    unpack_nibbles,
)

__all__ = [
    "AdamScalars",
    "QFormat",
    "compile_enabled",
    "qformat",
    "quantized_adam_",
    "set_compile",
    "step_quantized_adam",
]

_POLICY: dict[str, bool | None] = {"compile": None}
_COMPILED: dict[str, Callable[..., Any]] = {}


def set_compile(enabled: bool | None) -> None:
    """Turn the ``torch.compile``'d quantized step on (``True``), off (``False``) or back to the
    default (``None``: CUDA tensors compiled, CPU eager)."""
    _POLICY["compile"] = enabled


def compile_enabled(device: torch.device) -> bool:
    """Whether quantized steps on ``device`` go through ``torch.compile`` now."""
    choice = _POLICY["compile"]
    return device.type == "cuda" if choice is None else choice


@dataclass(frozen=True)
class QFormat:
    """The tensors one quantized slot format needs: decode ``table`` (qmap, or the int64 pair
    table of packed 4-bit codes), ``qmap``, LUT ``base``/``split`` (:class:`CodeLut`)."""

    bits: int
    block: int
    signed: bool  # unsigned formats store second moments: values known to be >= 0
    qmap: Tensor
    table: Tensor
    base: Tensor
    split: Tensor | None


@lru_cache(maxsize=64)
def qformat(codec: BlockwiseCodec, device: torch.device) -> QFormat:
    """:class:`QFormat` of ``codec`` on ``device``, cached: one object per format keeps the
    compiled step's guards stable."""
    qmap, lut, table = maps_of(codec.bits, codec.signed, str(device))
    split = lut.split if lut.has_split else None
    return QFormat(codec.bits, codec.block_size, codec.signed, qmap, table, lut.base, split)


class AdamScalars(NamedTuple):
    """Per-step scalars: floats in eager mode, 0-d tensors under ``torch.compile``."""

    beta1: float | Tensor
    beta2: float | Tensor
    eps: float
    step_size: float | Tensor  # η/bc1 (torch style) or η·√bc2/bc1 (HF)
    bc2_sqrt: float | Tensor  # √bc2 (torch style) or 1 (HF: ε added to √v directly)
    decay: float | Tensor  # 1 − η·λ (1.0: none)
    decay_before: bool


def _decode(q: Tensor, scale: Tensor, fmt: QFormat, n: int, gather_pairs: bool) -> Tensor:
    if fmt.bits == 4 and not gather_pairs:  # traced path: unpack, then one 16-entry gather
        codes = unpack_nibbles(q, n)
        return dequantize_blockwise(codes, scale, fmt.qmap, fmt.block, n)
    return dequantize_blockwise(q, scale, fmt.table, fmt.block, n)


def _encode(x: Tensor, fmt: QFormat) -> tuple[Tensor, Tensor]:
    y, absmax = normalize_blocks(x, fmt.block, nonneg=not fmt.signed)
    codes = lut_codes(y, fmt.base, fmt.split)
    return (pack_nibbles(codes) if fmt.bits == 4 else codes), absmax


def quantized_adam_(
    p: Tensor,
    g: Tensor,
    m_parts: tuple[Tensor, Tensor],
    v_parts: tuple[Tensor, Tensor],
    fmts: tuple[QFormat, QFormat],
    s: AdamScalars,
    gather_pairs: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One Adam step of fp32 ``p`` (updated in place) from its gradient and quantized ``(codes,
    absmax)`` of m and v; returns the new ``(m codes, m absmax, v codes, v absmax)``."""
    n = g.numel()
    gf = g.reshape(-1)
    m = _decode(*m_parts, fmts[0], n, gather_pairs)
    v = _decode(*v_parts, fmts[1], n, gather_pairs)
    m.lerp_(gf, 1.0 - s.beta1)
    if isinstance(s.beta2, Tensor):  # traced: no Tensor -> Scalar conversion (graph break)
        v.mul_(s.beta2).add_(gf.square().mul_(1.0 - s.beta2))
    else:
        v.mul_(s.beta2).addcmul_(gf, gf, value=1.0 - s.beta2)
    m_codes, m_scale = _encode(m, fmts[0])
    v_codes, v_scale = _encode(v, fmts[1])
    denom = v.sqrt_().div_(s.bc2_sqrt).add_(s.eps)
    flat = p.view(-1)
    decays = isinstance(s.decay, Tensor) or s.decay != 1.0
    if s.decay_before and decays:
        flat.mul_(s.decay)
    if isinstance(s.step_size, Tensor):
        flat.sub_(m.div_(denom).mul_(s.step_size))
    else:
        flat.addcdiv_(m, denom, value=-s.step_size)
    if not s.decay_before and decays:
        flat.mul_(s.decay)
    return m_codes, m_scale, v_codes, v_scale


def _compiled() -> Callable[..., Any]:
    fn = _COMPILED.get("adam")
    if fn is None:
        fn = torch.compile(quantized_adam_, dynamic=True)
        _COMPILED["adam"] = fn
    return fn


def _as_tensors(s: AdamScalars, device: torch.device) -> AdamScalars:
    def t(x: float | Tensor) -> Tensor:
        return torch.tensor(float(x), dtype=torch.float32, device=device)

    return s._replace(
        beta1=t(s.beta1),
        beta2=t(s.beta2),
        step_size=t(s.step_size),
        bc2_sqrt=t(s.bc2_sqrt),
        decay=t(s.decay),
    )


def step_quantized_adam(
    p: Tensor,
    state: dict[str, Any],
    prefix: str,
    fmts: tuple[QFormat, QFormat],
    scalars: AdamScalars,
    grad: Tensor | None = None,
) -> None:
    """Step ``p`` with its quantized slots ``{prefix}m.q``/``.scale`` and ``{prefix}v.*`` in
    ``state`` (updated in place), compiled when :func:`compile_enabled` says so; ``grad``
    defaults to ``p.grad``. Eager CPU steps run in cache-sized chunks (:func:`chunk_bounds`; on
    a GPU the extra launches would cost more than the cache saves)."""
    g = p.grad if grad is None else grad
    assert g is not None
    slots = [state[prefix + key] for key in SLOT_KEYS]
    if compile_enabled(p.device):
        m_parts, v_parts = (slots[0], slots[1]), (slots[2], slots[3])
        out = _compiled()(p, g, m_parts, v_parts, fmts, _as_tensors(scalars, p.device), False)
        torch._foreach_copy_(slots, list(out))
        return
    flat, gf = p.view(-1), g.reshape(-1)
    per_entry = _per_entry(fmts)
    bounds = chunk_bounds(flat.numel(), fmts) if p.device.type == "cpu" else [(0, flat.numel())]
    for lo, hi in bounds:
        parts = [_slot_slice(t, lo, hi, per) for t, per in zip(slots, per_entry, strict=True)]
        out = quantized_adam_(flat[lo:hi], gf[lo:hi], (parts[0], parts[1]), (parts[2], parts[3]),
                              fmts, scalars)  # fmt: skip
        torch._foreach_copy_(parts, list(out))


SLOT_KEYS = ("m.q", "m.scale", "v.q", "v.scale")
# Elements per eager chunk: the ~20 passes of the quantized step then run on ~1 MiB of fp32 that
# stays in L2 instead of streaming the whole tensor from memory each pass (2048x1024 adamw_4bit
# on the 2-core EPYC VM: 17-19 ms in chunks of 2**17-2**19 elements against 25-33 ms whole).
CHUNK_NUMEL = 1 << 18


def chunk_bounds(n: int, fmts: tuple[QFormat, QFormat]) -> list[tuple[int, int]]:
    """``[lo, hi)`` element ranges of about :data:`CHUNK_NUMEL` whose starts are whole blocks of
    both formats (and whole bytes of packed 4-bit codes), so chunks quantize as the whole does."""
    unit = math.lcm(fmts[0].block, fmts[1].block, 2)
    step = unit * max(1, CHUNK_NUMEL // unit)
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _per_entry(fmts: tuple[QFormat, QFormat]) -> tuple[int, int, int, int]:
    """Elements per stored entry of each slot: codes (2 per byte in 4-bit), block scales."""
    m, v = fmts
    return (2 if m.bits == 4 else 1), m.block, (2 if v.bits == 4 else 1), v.block


def _slot_slice(t: Tensor, lo: int, hi: int, per: int) -> Tensor:
    return t[lo // per : -(-hi // per)]


def adam_scalars(
    beta1: float, beta2: float, eps: float, style: str, lr: float, wd: float, mode: str, t: int
) -> AdamScalars:
    """:class:`AdamScalars` of step ``t`` (1-based) with the per-stage path's exact floats."""
    bc1 = 1.0 - beta1**t
    if style == "torch":
        step_size, bc2_sqrt = lr * (1.0 / bc1), math.sqrt(1.0 - beta2**t)
    else:
        step_size, bc2_sqrt = lr * (math.sqrt(1.0 - beta2**t) / bc1), 1.0
    decay = 1.0 - lr * wd if mode != "coupled" else 1.0
    return AdamScalars(beta1, beta2, eps, step_size, bc2_sqrt, decay, mode == "decoupled_before")
