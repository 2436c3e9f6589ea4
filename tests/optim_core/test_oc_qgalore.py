"""Q-GaLore (issue 12 item 3): INT8 hidden weights with stochastic rounding in the reference's
simulation mode (VITA-Group/Q-GaLore ``q_galore_adamw8bit_simulate.py``), ``weight_bytes``
accounting, and the lazy-refresh cosine on the float projector."""

from __future__ import annotations

import math

import torch

import optim_core
from optim_core.adaptive import Adam
from optim_core.lowrank import LowRank
from optim_core.quantize import MinMaxCodec
from optim_core.testing import llama_shapes
from optim_core.weight_quant import fake_quantize

SHAPES = llama_shapes(vocab=64, d=32, inter=48)
HIDDEN = [n for n, s in SHAPES.items() if n.startswith("layers") and len(s) == 2]


def _reference_sr(w: torch.Tensor, rand: torch.Tensor, group: int = 256) -> torch.Tensor:
    """``_quantize_stochastic_round`` of the reference, restated (its draws passed in)."""
    x = w.reshape(-1, group)
    scales = (x.amax(dim=1, keepdim=True) - x.amin(dim=1, keepdim=True)).clamp(min=1e-5) / 255
    zeros = (-torch.round(x.amin(dim=1, keepdim=True) / scales)).clamp_(0, 255)
    r = x / scales
    up, down = torch.ceil(r), torch.floor(r)
    q = torch.where(rand.view_as(r) < (r - down), up, down)
    return ((torch.clamp(q + zeros, 0, 255) - zeros) * scales).reshape(w.shape)


def _one_step(recipe: optim_core.Recipe) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = {
        n: torch.nn.Parameter(torch.randn(s, generator=gen) * 0.1) for n, s in SHAPES.items()
    }
    for p in params.values():
        p.grad = torch.randn(p.shape, generator=gen)
    optim_core.build(recipe, params).step()
    return {n: p.detach() for n, p in params.items()}


def test_int8_weights_follow_the_reference_stochastic_rounding() -> None:
    """One step with INT8 weights = the float step, then the reference's stochastic rounding
    (draws seeded per parameter position and step). Failed before: weights stayed float."""
    ours = _one_step(optim_core.presets.get("q_galore"))
    floats = _one_step(optim_core.presets.get("q_galore", weight_bits=None))
    for pos, name in enumerate(HIDDEN):
        gen = torch.Generator().manual_seed(pos * 1_000_003 + 1)
        rand = torch.rand((floats[name].numel() // 256, 256), generator=gen)
        torch.testing.assert_close(
            ours[name], _reference_sr(floats[name], rand), rtol=0, atol=1e-7
        )
        assert not torch.equal(ours[name], floats[name])
    for name in set(SHAPES) - set(HIDDEN):  # embeddings, head, norms: float as the reference
        assert torch.equal(ours[name], floats[name])


def test_stochastic_rounding_matches_reference_rule_and_is_unbiased() -> None:
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(4, 256, generator=gen)
    ours = fake_quantize(w, 8, 256, torch.Generator().manual_seed(7))
    rand = torch.rand(w.reshape(-1, 256).shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours, _reference_sr(w, rand), rtol=0, atol=1e-6)
    mean = torch.stack(
        [fake_quantize(w, 8, 256, torch.Generator().manual_seed(s)) for s in range(400)]
    ).mean(0)
    scale = (w.amax(1) - w.amin(1)).max().item() / 255
    assert (mean - w).abs().max().item() < 0.25 * scale  # E[SR(w)] = w; RTN is off by <= scale/2
    rtn = fake_quantize(w, 8, 256)
    assert (rtn - w).abs().max().item() <= 0.5 * scale + 1e-6


def test_weight_bytes_reports_the_int8_saving() -> None:
    hidden = sum(math.prod(SHAPES[n]) for n in HIDDEN)
    other = sum(math.prod(s) for n, s in SHAPES.items() if n not in HIDDEN)
    q_galore = optim_core.presets.get("q_galore")
    assert optim_core.weight_bytes(q_galore, SHAPES) == hidden + 8 * (hidden // 256) + 4 * other
    bf16 = optim_core.weight_bytes(optim_core.presets.get("galore"), SHAPES, torch.bfloat16)
    assert bf16 == 2 * (hidden + other)
    int8 = optim_core.weight_bytes(q_galore, SHAPES, torch.bfloat16)
    assert bf16 - int8 == hidden - 8 * (hidden // 256)  # 2 -> 1 byte + 8 bytes per 256


def test_lazy_refresh_cosine_uses_the_float_projector() -> None:
    """Failed before: the cosine compared INT4-dequantized projectors (2-9 % smaller)."""
    stage = LowRank([Adam()], 4, refresh=1, adaptive_refresh=True, projector_codec=MinMaxCodec(4))
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(64, 32, generator=gen)
    p = torch.zeros(64, 32)
    state = stage.init(p)
    vecs = []
    for step in range(1, 5):
        g = base + 0.3 * torch.randn(64, 32, generator=gen)
        stage.update(g, state, p, step)
        vecs.append(torch.linalg.svd(g, full_matrices=False)[2][0])  # right P: row 0 of Vh
    want = [torch.dot(a, b) / (a.norm() * b.norm()) for a, b in zip(vecs, vecs[1:], strict=False)]
    torch.testing.assert_close(state["cos"][:3], torch.stack(want), atol=1e-5, rtol=0)
