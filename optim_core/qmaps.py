"""Quantisation maps and the nearest-code lookup of the block-wise state formats.

- :func:`dynamic_map`: bitsandbytes' dynamic (tree) map (8-bit; torchao's 4-bit signed map with
  3 exponent bits); :func:`linear_map_unsigned`: torchao's 4-bit second-moment map.
- :func:`nearest_code`: round-to-nearest with ties up, bit-identical to torchao, as one
  ``bucketize`` against the exact fp32 switching points (:func:`tie_up_thresholds`);
  :class:`CodeLut` gives the same codes with two table gathers (the fast path).

Sources: bitsandbytes ``functional.create_dynamic_map``; torchao ``optim/quant_utils.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "CodeLut",
    "bucketize_codes",
    "dynamic_map",
    "linear_map_unsigned",
    "lut_codes",
    "nearest_code",
    "tie_up_thresholds",
]


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
    return bucketize_codes(y, tie_up_thresholds(qmap))


def bucketize_codes(y: Tensor, thresholds: Tensor) -> Tensor:
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


_HI_BUCKETS = 1 << 16  # LUT bucket = the high 16 bits of an fp32 pattern


@dataclass(frozen=True)
class CodeLut:
    """Lookup table equal to ``bucketize(y, thresholds, right=True)`` for every finite fp32 ``y``.

    Bucket ``h`` holds the 2**16 floats whose bit pattern has high half ``h``; ``base[h]`` counts
    the thresholds at or below the bucket's smallest value and ``split[h]`` is the one threshold
    inside the bucket (NaN, never reached, when there is none; the build checks that no bucket
    holds two).
    ``code = base[h] + (y >= split[h])``: two gathers from 64-Ki tables, one compare, one add.
    """

    base: Tensor  # uint8 (65536,)
    split: Tensor  # fp32 (65536,), NaN where the bucket holds no threshold
    has_split: bool  # False: no bucket holds a threshold (4-bit linear map): code = base[h]

    @staticmethod
    def build(thresholds: Tensor) -> CodeLut:
        t = thresholds.detach().float().cpu().contiguous()
        low = torch.arange(_HI_BUCKETS, dtype=torch.int32) << 16
        ends = torch.stack([low, low | 0xFFFF]).view(torch.float32)
        lo_val, hi_val = ends.amin(0), ends.amax(0)
        finite = torch.isfinite(lo_val) & torch.isfinite(hi_val)
        below = torch.searchsorted(t, lo_val, right=True)
        inside = torch.searchsorted(t, hi_val, right=True) - below
        if int(inside[finite].max()) > 1:
            raise ValueError("CodeLut: a bucket holds more than one threshold")
        head = torch.searchsorted(t, low.view(torch.float32), right=True)  # ±inf (and NaN)
        below = torch.where(finite, below, head).clamp_(max=t.numel())
        split = torch.where(
            (inside == 1) & finite, t[below.clamp(max=t.numel() - 1)], float("nan")
        )
        return CodeLut(below.to(torch.uint8), split, bool(split.isfinite().any()))

    def to(self, device: str) -> CodeLut:
        return CodeLut(self.base.to(device), self.split.to(device), self.has_split)

    def codes(self, y: Tensor) -> Tensor:
        """uint8 codes of contiguous fp32 ``y`` (same result as :func:`_bucketize`)."""
        return lut_codes(y, self.base, self.split if self.has_split else None)


def lut_codes(y: Tensor, base: Tensor, split: Tensor | None) -> Tensor:
    """:meth:`CodeLut.codes` as a pure tensor function (``split=None``: no bucket threshold)."""
    flat = y.contiguous().view(-1)
    key = flat.view(torch.int32).bitwise_right_shift(16).bitwise_and_(0xFFFF)
    code = base.index_select(0, key)
    if split is not None:
        code.add_(flat >= split.index_select(0, key))
    return code.view(y.shape)
