"""Quantized state codecs: maps, rounding, round-trip error bounds and exact byte counts."""

from __future__ import annotations

import math

import pytest
import torch

from optim_core import base, quantize
from optim_core.quantize import (
    BlockwiseCodec,
    MinMaxCodec,
    dequantize_blockwise,
    dynamic_map,
    linear_map_unsigned,
    make_codec,
    nearest_code,
    pack_nibbles,
    quantize_blockwise,
    unpack_nibbles,
)


def _stored_bytes(d: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in d.values())


def test_dynamic_map_shape_and_range() -> None:
    signed, unsigned = dynamic_map(True), dynamic_map(False)
    assert signed.numel() == unsigned.numel() == 256
    assert torch.all(signed[1:] > signed[:-1]) and torch.all(unsigned[1:] > unsigned[:-1])
    assert signed.max().item() == 1.0 and math.isclose(signed.min().item(), -0.99297, abs_tol=1e-5)
    assert unsigned.min().item() == 0.0 and unsigned.max().item() == 1.0
    assert 0.0 in signed.tolist()
    four = dynamic_map(True, 3, 4)
    assert four.numel() == 16 and 0.0 in four.tolist()
    assert torch.allclose(linear_map_unsigned(4), torch.arange(1, 17) / 16)


def test_dynamic_map_equals_bitsandbytes_and_torchao() -> None:
    bnb_f = pytest.importorskip("bitsandbytes.functional")
    ao = pytest.importorskip("torchao.optim.quant_utils")
    for signed in (True, False):
        ours = dynamic_map(signed)
        assert torch.equal(ours, torch.tensor(ao.create_dynamic_map(signed)))
        assert torch.allclose(ours, bnb_f.create_dynamic_map(signed).float(), atol=0, rtol=0)
    assert torch.equal(dynamic_map(True, 3, 4), torch.tensor(ao.create_dynamic_map(True, 3, 4)))


def test_nearest_code_matches_torchao_rounding() -> None:
    ao = pytest.importorskip("torchao.optim.quant_utils")
    gen = torch.Generator().manual_seed(0)
    qmap8 = dynamic_map(True)
    qmap4 = dynamic_map(True, 3, 4)
    # random values plus the exact fp32 switching points and their lower neighbours (ties)
    edges = [quantize.tie_up_thresholds(q) for q in (qmap8, qmap4)]
    below = [torch.nextafter(e, torch.full_like(e, -2.0)) for e in edges]
    y = torch.cat([torch.rand(50_000, generator=gen) * 2 - 1, *edges, *below])
    assert torch.equal(nearest_code(y, qmap8), ao.quantize_8bit_with_qmap(y, qmap8))
    assert torch.equal(nearest_code(y, qmap4), ao.quantize_4bit_with_qmap(y, qmap4))
    # exact nearest: no other map entry is strictly closer
    codes = nearest_code(y, qmap8).long()
    best = (y[:, None] - qmap8[None, :]).abs().min(dim=1).values
    assert torch.allclose((y - qmap8[codes]).abs(), best, atol=1e-7)


@pytest.mark.parametrize(
    ("bits", "signed", "block"),
    [(8, True, 256), (8, False, 256), (8, True, 2048), (4, True, 128), (4, False, 128)],
)
def test_blockwise_round_trip_error_bound(bits: int, signed: bool, block: int) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(96, 130, generator=gen)  # 12480 elements: a partial last block
    if not signed:
        x = x.square()
    codec = BlockwiseCodec(bits=bits, signed=signed, block_size=block, partial_blocks=True)
    d = codec.encode(x)
    assert set(d) == {"q", "scale"} and d["q"].dtype == torch.uint8
    y = codec.decode(d, tuple(x.shape))
    assert y.shape == x.shape and y.dtype == torch.float32
    qmap = quantize._qmap(bits, signed, "cpu")
    half_gap = ((qmap[1:] - qmap[:-1]).max() / 2).item()
    if not signed and bits == 4:  # no zero in the map: values below 1/16 round up to it
        half_gap = max(half_gap, qmap[0].item())
    flat = torch.nn.functional.pad(x.reshape(-1), (0, d["scale"].numel() * block - x.numel()))
    absmax = flat.view(-1, block).abs().amax(dim=1)
    bound = (absmax.repeat_interleave(block)[: x.numel()] * half_gap * (1 + 1e-5)).view(x.shape)
    assert torch.all((y - x).abs() <= bound + 1e-12)
    assert torch.allclose(d["scale"], absmax)


def test_zeros_round_trip_exactly() -> None:
    z = torch.zeros(64, 128)
    for signed in (True, False):
        codec = make_codec(8, signed=signed)
        assert torch.equal(codec.decode(codec.encode(z), (64, 128)), z)
    four = make_codec(4, signed=True)
    assert torch.equal(four.decode(four.encode(z), (64, 128)), z)


def test_nibble_packing_round_trip() -> None:
    codes = torch.randint(0, 16, (1001,), dtype=torch.uint8)
    packed = pack_nibbles(codes)
    assert packed.numel() == 501
    assert torch.equal(unpack_nibbles(packed, 1001), codes)


def test_quantize_blockwise_partial_block_scale() -> None:
    x = torch.arange(1, 301, dtype=torch.float32)  # blocks [1..256], [257..300]
    qmap = dynamic_map(False)
    codes, absmax = quantize_blockwise(x, qmap, 256)
    assert absmax.tolist() == [256.0, 300.0]
    back = dequantize_blockwise(codes, absmax, qmap, 256, 300)
    assert back[255].item() == 256.0 and back[-1].item() == 300.0


@pytest.mark.parametrize("shape", [(512, 512), (1376, 512), (100, 41), (7,), (4096,), (33, 129)])
@pytest.mark.parametrize("bits", [32, 16, 8, 4])
def test_state_bytes_equal_stored_bytes(shape: tuple[int, ...], bits: int) -> None:
    for signed in (True, False):
        codec = make_codec(bits, signed=signed)
        t = torch.randn(shape).abs() if not signed else torch.randn(shape)
        assert codec.state_bytes(shape) == _stored_bytes(codec.encode(t))


def test_small_tensors_keep_fp32_state() -> None:
    codec = make_codec(8)
    d = codec.encode(torch.randn(10, 10))
    assert set(d) == {""} and d[""].dtype == torch.float32
    assert codec.state_bytes((10, 10)) == 400


def test_partial_last_block_8bit_as_bitsandbytes_4bit_fp32_as_torchao() -> None:
    x = torch.randn(100, 50)  # 5000 >= 4096, not a multiple of 256 or 128
    assert set(make_codec(8).encode(x)) == {"q", "scale"}
    four = make_codec(4)
    assert set(four.encode(x)) == {""} and four.state_bytes((100, 50)) == 4 * 5000
    assert set(four.encode(torch.randn(96, 64))) == {"q", "scale"}  # 48 whole blocks


def test_eight_bit_state_is_at_most_026_of_fp32() -> None:
    for shape in [(512, 512), (1376, 512), (512, 1376), (32000, 512)]:
        ratio = make_codec(8).state_bytes(shape) / (4 * math.prod(shape))
        assert ratio <= 0.26
        assert math.isclose(ratio, (1 + 4 / 256) / 4)
    assert make_codec(4).state_bytes((512, 512)) / (4 * 512 * 512) <= 0.14


def test_minmax_codec_round_trip_and_bytes() -> None:
    codec = MinMaxCodec(bits=4, group_size=256)
    x = torch.randn(128, 512)
    d = codec.encode(x)
    assert d["q"].max().item() <= 15 and d["q"].dtype == torch.uint8
    y = codec.decode(d, (128, 512))
    step = d["scale"].repeat_interleave(256).view(128, 512)
    assert torch.all((y - x).abs() <= step * 0.5 + 1e-6)
    assert codec.state_bytes((128, 512)) == _stored_bytes(d) == 128 * 512 + 8 * 256


def test_make_codec_and_base_codec_for_bits() -> None:
    assert make_codec(32) is base.FP32_CODEC and make_codec(16) is base.BF16_CODEC
    unsigned = base.codec_for_bits(8, 2048, signed=False)
    assert isinstance(unsigned, BlockwiseCodec)
    assert (unsigned.signed, unsigned.block_size) == (False, 2048)
    four = make_codec(4)
    assert isinstance(four, BlockwiseCodec) and four.block_size == 128
    with pytest.raises(ValueError, match="state_bits"):
        make_codec(3)


def test_slot_helpers_round_trip_through_quantized_codec() -> None:
    codec = make_codec(8, signed=True)
    m = torch.randn(64, 128)
    state = base.slot_init("m", torch.zeros_like(m), codec)
    assert set(state) == {"m.q", "m.scale"}
    base.slot_write(state, "m", m, codec)
    back = base.slot_read(state, "m", (64, 128), codec)
    assert torch.allclose(back, m, atol=m.abs().max().item() * 0.01)


@pytest.mark.parametrize(("bits", "signed"), [(8, True), (8, False), (4, True), (4, False)])
def test_code_lut_equals_bucketize_exactly(bits: int, signed: bool) -> None:
    qmap, lut = quantize._maps(bits, signed, "cpu")
    t = quantize.tie_up_thresholds(qmap)
    gen = torch.Generator().manual_seed(7)
    rand = torch.rand(200_000, generator=gen) * 2 - 1
    special = torch.tensor([0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30, 1e-7, -1e-7])
    y = torch.cat(
        [rand, rand.abs() ** 8, t, torch.nextafter(t, torch.full_like(t, -2.0)), special]
    )
    y = torch.cat([y, -y, y * 1e-3, torch.tensor([float("inf"), -float("inf")])])
    assert lut.base.numel() == 2**16
    assert torch.equal(lut.codes(y), nearest_code(y, qmap))
    assert torch.equal(lut.codes(y.view(-1, 2)), nearest_code(y, qmap).view(-1, 2))
