"""Quantized optimizer-state storage: codecs a stateful stage stores its slots through.

A codec turns an fp32 state tensor into a small dict of storage tensors and back:
``codec.encode(t) -> dict[str, Tensor]`` and ``codec.decode(d, shape) -> Tensor`` (fp32).
Semantics (as bitsandbytes and torchao): dequantise on read, do the step in fp32 with the
un-requantised new values, requantise on write.

Formats:
- ``fp32`` / ``bf16``: plain casts (``optim_core.base`` codecs, returned by :func:`make_codec`).
- ``dyn8``: 8-bit block-wise dynamic (tree) map, signed map for m, unsigned for v; per-block
  absmax scale (fp32); block 256 (bitsandbytes >= 0.44, torchao) or 2048 (paper).
- ``dyn4``: 4-bit block-wise (torchao): signed dynamic map with 3 exponent bits, unsigned linear
  map {1/16..16/16}; two codes per byte; block 128.
- ``minmax``: asymmetric min-max uniform integer quantisation per group (Q-GaLore projector).

Rounding is round-to-nearest with ties up, computed exactly as torchao does.
Tensors with fewer than ``min_numel`` elements keep an fp32 state (bitsandbytes / torchao rule).

References:
    Dettmers et al., "8-bit Optimizers via Block-wise Quantization", ICLR 2022.
    Li et al., "Memory Efficient Optimizers with 4-bit States", NeurIPS 2023.
    Sources: bitsandbytes ``functional.create_dynamic_map``; torchao ``optim/quant_utils.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch import Tensor

from optim_core.base import BF16_CODEC, FP32_CODEC, StateCodec

__all__ = [
    "BlockwiseCodec",
    "CodeLut",
    "MinMaxCodec",
    "dequantize_blockwise",
    "dequantize_minmax",
    "dynamic_map",
    "linear_map_unsigned",
    "make_codec",
    "nearest_code",
    "pack_nibbles",
    "quantize_blockwise",
    "quantize_minmax",
    "tie_up_thresholds",
    "unpack_nibbles",
]

MIN_QUANT_NUMEL = 4096  # smaller tensors keep fp32 state (bitsandbytes min_8bit_size, torchao)


# ---------------------------------------------------------------------------------------------
# pure tensor functions
# ---------------------------------------------------------------------------------------------


def dynamic_map(signed: bool, max_exponent_bits: int = 7, total_bits: int = 8) -> Tensor:
    """Sorted dynamic (tree) quantisation map with ``2**total_bits`` fp32 entries in [-1, 1].

    Exponent i = 0..E-1 contributes midpoints of ``linspace(0.1, 1, K_i + 1)`` scaled by
    ``10**(i - E + 1)`` (and their negatives when signed); 0 and 1 are added.
    """
    data: list[float] = []
    non_sign_bits = total_bits - 1
    extra = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        power = i + non_sign_bits - max_exponent_bits + (0 if signed else 1)
        data += _scaled_means(2**power + 1, i, max_exponent_bits, signed)
    if extra > 0:
        data += _scaled_means(extra + 1, max_exponent_bits - 1, max_exponent_bits, signed)
    data += [0.0, 1.0]
    if len(data) != 2**total_bits:
        raise ValueError(f"dynamic map has {len(data)} entries, expected {2**total_bits}")
    return torch.tensor(sorted(data), dtype=torch.float32)


def _scaled_means(n_bounds: int, i: int, max_exponent_bits: int, signed: bool) -> list[float]:
    bounds = torch.linspace(0.1, 1, n_bounds)
    means = (bounds[:-1] + bounds[1:]) / 2.0
    scale = 10 ** (-(max_exponent_bits - 1) + i)
    out = (scale * means).tolist()
    if signed:
        out += (-scale * means).tolist()
    return out


def linear_map_unsigned(total_bits: int = 4) -> Tensor:
    """Unsigned linear map {1/2^b, ..., 2^b/2^b} without zero (torchao 4-bit second moment)."""
    n = 2**total_bits
    return torch.linspace(0, 1, n + 1, dtype=torch.float32)[1:]


def nearest_code(y: Tensor, qmap: Tensor) -> Tensor:
    """Index of the nearest entry of the sorted ``qmap`` for every element of ``y`` (ties up).

    Bit-identical to torchao's rule (largest i with ``qmap[i] <= y``, then round up iff
    ``y − qmap[i] >= (qmap[i+1] − qmap[i])/2`` in fp32), computed as one ``bucketize`` against
    the exact fp32 switching points of that rule (:func:`tie_up_thresholds`).
    """
    return _bucketize(y, tie_up_thresholds(qmap))


def _bucketize(y: Tensor, thresholds: Tensor) -> Tensor:
    return torch.bucketize(y, thresholds, out_int32=True, right=True).to(torch.uint8)


def tie_up_thresholds(qmap: Tensor) -> Tensor:
    """For each gap i of the sorted fp32 ``qmap``: the smallest fp32 ``y`` with
    ``fl(y − qmap[i]) >= fl((qmap[i+1] − qmap[i]) · 0.5)`` (torchao's round-up condition)."""
    down, up = qmap[:-1], qmap[1:]
    half = (up - down) * 0.5
    t = down + half
    pos_inf = torch.full_like(t, float("inf"))
    neg_inf = torch.full_like(t, float("-inf"))
    for _ in range(64):  # move up until the condition holds (monotone in y)
        bad = (t - down) < half
        if not bool(bad.any()):
            break
        t = torch.where(bad, torch.nextafter(t, pos_inf), t)
    for _ in range(64):  # then down while the next smaller float still satisfies it
        lower = torch.nextafter(t, neg_inf)
        ok = (lower - down) >= half
        if not bool(ok.any()):
            break
        t = torch.where(ok, lower, t)
    return t


_KEY_SHIFT = 16  # LUT buckets of 2**16 consecutive fp32 values (1/128 of an octave)


@dataclass(frozen=True)
class CodeLut:
    """Lookup table equivalent to ``bucketize(y, thresholds, right=True)`` for ``y`` in [-1, 1].

    ``y``'s fp32 bit pattern, made order-preserving, is cut into buckets; ``lo[b]`` counts the
    thresholds of lower buckets and at most ``k`` thresholds fall in one bucket, so
    ``code = lo[b] + Σ_{j<k} [y >= t[lo[b] + j]]`` — a few gathers instead of a binary search.
    """

    lo: Tensor  # int64 (n_buckets,)
    thresholds: Tensor  # fp32 (n_thresholds + k,), padded with +inf
    k: int
    key_min: int
    key_max: int

    @staticmethod
    def build(thresholds: Tensor) -> CodeLut:
        t = thresholds.detach().float().cpu().contiguous()
        keys = _ordered_key(t)
        key_min = int(_ordered_key(torch.tensor([-1.0]))[0])
        key_max = int(_ordered_key(torch.tensor([1.0]))[0])
        buckets = torch.arange(key_min, key_max + 1, dtype=torch.int32)
        lo = torch.searchsorted(keys, buckets, right=False)
        k = int(torch.unique_consecutive(keys, return_counts=True)[1].max())
        padded = torch.cat([t, torch.full((k,), float("inf"))])
        return CodeLut(lo, padded, k, key_min, key_max)

    def to(self, device: str) -> CodeLut:
        return CodeLut(
            self.lo.to(device), self.thresholds.to(device), self.k, self.key_min, self.key_max
        )

    def codes(self, y: Tensor) -> Tensor:
        """uint8 codes of contiguous fp32 ``y`` (same result as :func:`_bucketize`)."""
        key = _ordered_key(y).clamp_(self.key_min, self.key_max).sub_(self.key_min)
        base = torch.take(self.lo, key.long())
        code = base + (y >= torch.take(self.thresholds, base))
        for j in range(1, self.k):
            code += y >= torch.take(self.thresholds, base + j)
        return code.to(torch.uint8)


def _ordered_key(y: Tensor) -> Tensor:
    """Monotone int32 key of fp32 values (sign-magnitude bits -> two's complement order)."""
    bits = y.contiguous().view(torch.int32)
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)) >> _KEY_SHIFT


def quantize_blockwise(
    x: Tensor, qmap: Tensor, block_size: int, lut: CodeLut | None = None
) -> tuple[Tensor, Tensor]:
    """Block-wise absmax quantisation of the flattened ``x``.

    Returns ``(codes, absmax)``: uint8 codes of shape ``(numel,)`` and fp32 absmax of shape
    ``(ceil(numel / block_size),)``; a last partial block gets its own absmax (bitsandbytes).
    The absmax is clipped at 1e-12 (torchao) so an all-zero block stays representable.
    ``lut`` (a :class:`CodeLut` of ``qmap``'s thresholds, same codes) may be passed precomputed.
    """
    flat = x.reshape(-1).float()
    n = flat.numel()
    n_blocks = math.ceil(n / block_size)
    pad = n_blocks * block_size - n
    blocks = (torch.nn.functional.pad(flat, (0, pad)) if pad else flat).view(n_blocks, block_size)
    absmax = blocks.abs().amax(dim=-1).clip(1e-12)
    y = (blocks / absmax.view(-1, 1)).view(-1)
    if pad:
        y = y[:n]
    if lut is None:
        return _bucketize(y, tie_up_thresholds(qmap)), absmax
    return lut.codes(y), absmax


def dequantize_blockwise(
    codes: Tensor, absmax: Tensor, qmap: Tensor, block_size: int, numel: int
) -> Tensor:
    """Inverse of :func:`quantize_blockwise`: flat fp32 tensor of ``numel`` elements."""
    vals = torch.take(qmap, codes[:numel].long())
    pad = absmax.numel() * block_size - numel
    if pad:
        vals = torch.nn.functional.pad(vals, (0, pad))
    out = (vals.view(-1, block_size) * absmax.view(-1, 1)).view(-1)
    return out[:numel] if pad else out


def pack_nibbles(codes: Tensor) -> Tensor:
    """Two 4-bit codes per byte (first code in the high nibble, as torchao)."""
    if codes.numel() % 2:
        codes = torch.nn.functional.pad(codes, (0, 1))
    return (codes[0::2] << 4) | codes[1::2]


def unpack_nibbles(packed: Tensor, numel: int) -> Tensor:
    """Inverse of :func:`pack_nibbles` (``numel`` codes)."""
    return torch.stack([packed >> 4, packed & 0b1111], dim=-1).view(-1)[:numel]


def quantize_minmax(x: Tensor, bits: int, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric min-max uniform quantisation per group (Q-GaLore ``_quantize_tensor``).

    ``scale = max(xmax - xmin, 1e-5) / (2^b - 1)``, ``zero = clamp(-round(xmin/scale), 0, 2^b-1)``,
    ``q = clamp(round(x/scale) + zero, 0, 2^b - 1)`` (uint8, not packed). Returns
    ``(q, scale, zero)`` with one fp32 scale and zero per group; ``numel % group_size == 0``.
    """
    qmax = 2**bits - 1
    groups = x.float().contiguous().view(-1, group_size)
    xmin = groups.amin(dim=-1, keepdim=True)
    xmax = groups.amax(dim=-1, keepdim=True)
    scale = (xmax - xmin).clamp(min=1e-5) / qmax
    zero = (-torch.round(xmin / scale)).clamp(0, qmax)
    q = (torch.round(groups / scale) + zero).clamp(0, qmax)
    return q.to(torch.uint8).reshape(-1), scale.reshape(-1), zero.reshape(-1)


def dequantize_minmax(q: Tensor, scale: Tensor, zero: Tensor, group_size: int) -> Tensor:
    """Inverse of :func:`quantize_minmax`: ``(q - zero) * scale`` (flat fp32)."""
    groups = q.view(-1, group_size).float()
    return ((groups - zero.view(-1, 1)) * scale.view(-1, 1)).view(-1)


@lru_cache(maxsize=32)
def _maps(bits: int, signed: bool, device: str) -> tuple[Tensor, CodeLut]:
    """(qmap, code lookup table) of a format, cached per device."""
    if bits == 8:
        qmap = dynamic_map(signed, 7, 8)
    elif signed:
        qmap = dynamic_map(True, 3, 4)
    else:
        qmap = linear_map_unsigned(4)
    return qmap.to(device), CodeLut.build(tie_up_thresholds(qmap)).to(device)


def _qmap(bits: int, signed: bool, device: str) -> Tensor:
    return _maps(bits, signed, device)[0]


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


# ---------------------------------------------------------------------------------------------
# codecs (StateCodec protocol of optim_core.base)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockwiseCodec:
    """8-bit (dynamic map) or 4-bit (torchao maps, packed) block-wise absmax quantisation.

    Stored tensors: ``q`` (uint8 codes; 4-bit: two per byte) and ``scale`` (fp32 absmax per
    block). Tensors with ``numel < min_numel`` are stored as fp32 under ``""``.
    """

    bits: int = 8  # 8 or 4
    signed: bool = True
    block_size: int = 256
    min_numel: int = MIN_QUANT_NUMEL
    name: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"dyn{self.bits}{'s' if self.signed else 'u'}")

    def _quantized(self, numel: int) -> bool:
        return numel >= self.min_numel

    def encode(self, t: Tensor) -> dict[str, Tensor]:
        if not self._quantized(t.numel()):
            return {"": t.float()}
        qmap, lut = _maps(self.bits, self.signed, str(t.device))
        codes, absmax = quantize_blockwise(t, qmap, self.block_size, lut)
        if self.bits == 4:
            codes = pack_nibbles(codes)
        return {"q": codes, "scale": absmax}

    def decode(self, d: dict[str, Tensor], shape: tuple[int, ...]) -> Tensor:
        if "" in d:
            return d[""].float().view(shape)
        n = _numel(shape)
        codes = d["q"]
        if self.bits == 4:
            codes = unpack_nibbles(codes, n)
        qmap = _qmap(self.bits, self.signed, str(codes.device))
        return dequantize_blockwise(codes, d["scale"], qmap, self.block_size, n).view(shape)

    def state_bytes(self, shape: tuple[int, ...]) -> int:
        n = _numel(shape)
        if not self._quantized(n):
            return 4 * n
        code_bytes = n if self.bits == 8 else math.ceil(n / 2)
        return code_bytes + 4 * math.ceil(n / self.block_size)


@dataclass(frozen=True)
class MinMaxCodec:
    """Asymmetric min-max integer storage per group (Q-GaLore's INT4 projector, unpacked).

    Stored: ``q`` (uint8, one code per element), ``scale`` and ``zero`` (fp32 per group).
    Falls back to fp32 under ``""`` when ``numel`` is not a multiple of ``group_size``.
    """

    bits: int = 4
    group_size: int = 256
    name: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"minmax{self.bits}")

    def encode(self, t: Tensor) -> dict[str, Tensor]:
        if t.numel() % self.group_size:
            return {"": t.float()}
        q, scale, zero = quantize_minmax(t, self.bits, self.group_size)
        return {"q": q, "scale": scale, "zero": zero}

    def decode(self, d: dict[str, Tensor], shape: tuple[int, ...]) -> Tensor:
        if "" in d:
            return d[""].float().view(shape)
        return dequantize_minmax(d["q"], d["scale"], d["zero"], self.group_size).view(shape)

    def state_bytes(self, shape: tuple[int, ...]) -> int:
        n = _numel(shape)
        if n % self.group_size:
            return 4 * n
        return n + 2 * 4 * (n // self.group_size)


def make_codec(
    bits: int, signed: bool = True, block_size: int | None = None, min_numel: int = MIN_QUANT_NUMEL
) -> StateCodec:
    """Codec for a state slot stored with ``bits`` bits (32, 16, 8 or 4).

    ``signed`` picks the signed map (first moments) or the unsigned map (second moments);
    ``block_size`` defaults to 256 for 8-bit and 128 for 4-bit (torchao / bitsandbytes).
    """
    if bits == 32:
        return FP32_CODEC
    if bits == 16:
        return BF16_CODEC
    if bits in (8, 4):
        block = block_size if block_size is not None else (256 if bits == 8 else 128)
        if block <= 0 or (bits == 4 and block % 2):
            raise ValueError(f"block_size: must be a positive (even for 4-bit) int, got {block}")
        return BlockwiseCodec(bits=bits, signed=signed, block_size=block, min_numel=min_numel)
    raise ValueError(f"state_bits: must be one of [32, 16, 8, 4], got {bits!r}")
