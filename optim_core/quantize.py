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

Rounding is round-to-nearest with ties up, computed exactly as torchao does; the maps and the
code lookup live in :mod:`optim_core.qmaps` (re-exported here). Every function works on the
flattened tensor at once (no per-block Python): block absmax by two reductions, codes by two
64-Ki-entry table gathers (:class:`CodeLut`), decoding by one gather from the 256-entry map (4-bit:
an int64 table holding both values of a byte). Tensors with fewer than ``min_numel`` elements
keep an fp32 state (bitsandbytes / torchao rule). A tensor whose size is not a multiple of the
block is quantized with a partial last block in 8-bit (bitsandbytes) but kept fp32 in 4-bit
(torchao, the only 4-bit reference: ``numel >= 4096 and numel % block_size == 0``).

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
from optim_core.qmaps import (
    CodeLut,
    bucketize_codes,
    dynamic_map,
    linear_map_unsigned,
    lut_codes,
    nearest_code,
    tie_up_thresholds,
)

__all__ = [
    "BlockwiseCodec",
    "CodeLut",
    "MinMaxCodec",
    "dequantize_blockwise",
    "dequantize_minmax",
    "dynamic_map",
    "linear_map_unsigned",
    "lut_codes",
    "make_codec",
    "maps_of",
    "block_absmax",
    "nearest_code",
    "normalize_blocks",
    "pack_nibbles",
    "pair_table",
    "quantize_blockwise",
    "quantize_minmax",
    "scale_blocks_",
    "tie_up_thresholds",
    "unpack_nibbles",
]

MIN_QUANT_NUMEL = 4096  # smaller tensors keep fp32 state (bitsandbytes min_8bit_size, torchao)


# ---------------------------------------------------------------------------------------------
# pure tensor functions
# ---------------------------------------------------------------------------------------------


def block_absmax(blocks: Tensor, nonneg: bool = False) -> Tensor:
    """``max|x|`` per row of ``blocks`` (two reductions, no ``|x|`` temporary; one when the
    caller knows ``blocks >= 0``, e.g. a second moment), clipped at 1e-12 as torchao so an
    all-zero block stays representable."""
    if nonneg:
        return blocks.amax(dim=-1).clip_(1e-12)
    return torch.maximum(blocks.amax(dim=-1), blocks.amin(dim=-1).neg_()).clip_(1e-12)


def quantize_blockwise(
    x: Tensor, qmap: Tensor, block_size: int, lut: CodeLut | None = None, nonneg: bool = False
) -> tuple[Tensor, Tensor]:
    """Block-wise absmax quantisation of the flattened ``x``.

    Returns ``(codes, absmax)``: uint8 codes of shape ``(numel,)`` and fp32 absmax of shape
    ``(ceil(numel / block_size),)``; a last partial block gets its own absmax (bitsandbytes).
    The absmax is clipped at 1e-12 (torchao) so an all-zero block stays representable.
    ``lut`` (a :class:`CodeLut` of ``qmap``'s thresholds, same codes) may be passed precomputed;
    ``nonneg``: ``x >= 0`` is known (an unsigned map's values), one reduction per block.
    """
    y, absmax = normalize_blocks(x, block_size, nonneg)
    if lut is None:
        return bucketize_codes(y, tie_up_thresholds(qmap)), absmax
    return lut.codes(y), absmax


def normalize_blocks(x: Tensor, block_size: int, nonneg: bool = False) -> tuple[Tensor, Tensor]:
    """``(y, absmax)``: the flattened ``x`` divided by its block's absmax (in [-1, 1]);
    ``nonneg``: ``x >= 0`` is known (one reduction per block instead of two)."""
    flat = x.reshape(-1).float()
    n = flat.numel()
    n_blocks = -(-n // block_size)  # integer ceil: stays symbolic under torch.compile
    pad = n_blocks * block_size - n
    blocks = (torch.nn.functional.pad(flat, (0, pad)) if pad else flat).view(n_blocks, block_size)
    absmax = block_absmax(blocks, nonneg)
    y = torch.div(blocks, absmax.view(-1, 1)).view(-1)
    return (y[:n] if pad else y), absmax


def dequantize_blockwise(
    codes: Tensor, absmax: Tensor, qmap: Tensor, block_size: int, numel: int
) -> Tensor:
    """Inverse of :func:`quantize_blockwise`: flat fp32 tensor of ``numel`` elements.

    ``qmap`` may also be the int64 pair table of :func:`pair_table` with ``codes`` packed two
    per byte (4-bit): one gather yields both values of a byte."""
    vals = qmap.index_select(0, codes.view(-1).to(torch.int32)).view(torch.float32)[:numel]
    return scale_blocks_(vals, absmax, block_size)


def scale_blocks_(vals: Tensor, absmax: Tensor, block_size: int) -> Tensor:
    """``vals[i] *= absmax[i // block_size]`` in place (a last partial block included)."""
    n = vals.numel()
    full = (n // block_size) * block_size
    if full:
        vals[:full].view(-1, block_size).mul_(absmax[: full // block_size].view(-1, 1))
    if full < n:
        vals[full:].mul_(absmax[-1])
    return vals


def pair_table(qmap: Tensor) -> Tensor:
    """``(256,)`` int64 table whose entry ``b`` holds the fp32 pair ``(qmap[b >> 4],
    qmap[b & 15])`` bit for bit (gathering 1-D int64 is torch's fast path; ``view(float32)``
    of the gathered entries gives the decoded values in order)."""
    b = torch.arange(256, device=qmap.device)
    pairs = torch.stack([qmap[b >> 4], qmap[b & 15]], dim=-1).contiguous()
    return pairs.view(torch.int64).view(-1)


def pack_nibbles(codes: Tensor) -> Tensor:
    """Two 4-bit codes per byte (first code in the high nibble, as torchao)."""
    if codes.numel() % 2:
        codes = torch.nn.functional.pad(codes, (0, 1))
    return torch.bitwise_left_shift(codes[0::2], 4).bitwise_or_(codes[1::2])


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


def maps_of(bits: int, signed: bool, device: str) -> tuple[Tensor, CodeLut, Tensor]:
    """``(qmap, code LUT, decode table)`` of a block-wise format on ``device`` (cached)."""
    qmap, lut = _maps(bits, signed, device)
    return qmap, lut, _decode_table(bits, signed, device)


@lru_cache(maxsize=32)
def _decode_table(bits: int, signed: bool, device: str) -> Tensor:
    """What a stored byte decodes to: the qmap (8-bit) or its pair table (4-bit, packed)."""
    qmap = _qmap(bits, signed, device)
    return qmap if bits == 8 else pair_table(qmap)


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


# ---------------------------------------------------------------------------------------------
# codecs (StateCodec protocol of optim_core.base)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockwiseCodec:
    """8-bit (dynamic map) or 4-bit (torchao maps, packed) block-wise absmax quantisation.

    Stored tensors: ``q`` (uint8 codes; 4-bit: two per byte) and ``scale`` (fp32 absmax per
    block). Tensors with ``numel < min_numel``, or (``partial_blocks=False``, torchao) whose
    ``numel`` is not a multiple of ``block_size``, are stored as fp32 under ``""``.
    """

    bits: int = 8  # 8 or 4
    signed: bool = True
    block_size: int = 256
    min_numel: int = MIN_QUANT_NUMEL
    partial_blocks: bool = True  # quantize a partial last block (bitsandbytes) or keep fp32
    name: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"dyn{self.bits}{'s' if self.signed else 'u'}")

    def _quantized(self, numel: int) -> bool:
        whole = self.partial_blocks or numel % self.block_size == 0
        return numel >= self.min_numel and whole

    def encode(self, t: Tensor) -> dict[str, Tensor]:
        if not self._quantized(t.numel()):
            return {"": t.float()}
        qmap, lut = _maps(self.bits, self.signed, str(t.device))
        codes, absmax = quantize_blockwise(t, qmap, self.block_size, lut, not self.signed)
        if self.bits == 4:
            codes = pack_nibbles(codes)
        return {"q": codes, "scale": absmax}

    def decode(self, d: dict[str, Tensor], shape: tuple[int, ...]) -> Tensor:
        if "" in d:
            return d[""].float().view(shape)
        n = _numel(shape)
        codes = d["q"]
        table = _decode_table(self.bits, self.signed, str(codes.device))
        return dequantize_blockwise(codes, d["scale"], table, self.block_size, n).view(shape)

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
    8-bit quantizes a partial last block (bitsandbytes, ``adamw_8bit``'s reference on such
    sizes); 4-bit keeps tensors that are not a block multiple in fp32 (torchao ``_new_buffer``).
    """
    if bits == 32:
        return FP32_CODEC
    if bits == 16:
        return BF16_CODEC
    if bits in (8, 4):
        block = block_size if block_size is not None else (256 if bits == 8 else 128)
        if block <= 0 or (bits == 4 and block % 2):
            raise ValueError(f"block_size: must be a positive (even for 4-bit) int, got {block}")
        return BlockwiseCodec(
            bits=bits,
            signed=signed,
            block_size=block,
            min_numel=min_numel,
            partial_blocks=bits == 8,
        )
    raise ValueError(f"state_bits: must be one of [32, 16, 8, 4], got {bits!r}")
