"""adamw_8bit / adamw_4bit / q_galore presets: equivalence with torchao and bitsandbytes,
closeness to fp32 AdamW / GaLore, and exact state accounting on LLaMA-shaped parameters.

torchao's optimizers wrap their step in ``torch.compile`` (about two minutes of compilation per
shape on a 2-core CPU); the tests run the same torchao code eagerly by making ``torch.compile``
the identity for the duration of the test (compile fusion changes results by ≤ 5e-8 relative,
docs/references.md#equivalence-tests, but a code flipped near a rounding midpoint can amplify that).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from replay import Grads, max_rel, replay, seeded_setup

import optim_core
from optim_core.testing import llama_shapes

SHAPES = {
    "layers.0.attn.q.weight": (128, 64),  # 8192 elements: quantized (>= 4096, block multiple)
    "layers.0.mlp.down.weight": (64, 128),
    "layers.0.attn_norm.weight": (64,),  # small: fp32 state, as bitsandbytes / torchao
}
STEPS = 10


def _setup(seed: int) -> tuple[dict[str, torch.Tensor], Grads]:
    return seeded_setup(SHAPES, STEPS, seed)


def _train(opt_factory: Any, p0: dict, grads: Grads) -> tuple[dict, torch.optim.Optimizer]:
    return replay(opt_factory, p0, grads)


def _ours(preset: str, p0: dict, grads: list[dict], **kw: Any) -> dict[str, torch.Tensor]:
    recipe = optim_core.presets.get(preset, **kw)
    return _train(lambda ps: optim_core.build(recipe, ps), p0, grads)[0]


@pytest.fixture
def eager_torchao(monkeypatch: pytest.MonkeyPatch) -> Any:
    adam = pytest.importorskip("torchao.optim.adam")
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    return adam


@pytest.mark.parametrize(
    ("preset", "cls"), [("adamw_8bit", "AdamW8bit"), ("adamw_4bit", "AdamW4bit")]
)
def test_low_bit_adamw_equals_torchao(preset: str, cls: str, eager_torchao: Any) -> None:
    p0, grads = _setup(0)
    ours = _ours(preset, p0, grads, lr=1e-3, weight_decay=1e-2)
    ref_cls = getattr(eager_torchao, cls)
    ref, ref_opt = _train(
        lambda ps: ref_cls(list(ps.values()), lr=1e-3, weight_decay=1e-2), p0, grads
    )
    assert max_rel(ours, ref) < 1e-6
    # the reference really quantized the matrices (and not the vector)
    states = list(ref_opt.state.values())
    assert type(states[0]["exp_avg"]).__name__.startswith("OptimState")
    assert type(states[2]["exp_avg"]) is torch.Tensor


def test_adamw_8bit_equals_bitsandbytes() -> None:
    bnb = pytest.importorskip("bitsandbytes")
    p0, grads = _setup(1)
    ours = _ours("adamw_8bit", p0, grads, lr=1e-3, weight_decay=1e-2)
    ref, ref_opt = _train(
        lambda ps: bnb.optim.AdamW8bit(list(ps.values()), lr=1e-3, weight_decay=1e-2), p0, grads
    )
    assert max_rel(ours, ref) < 1e-4
    assert next(iter(ref_opt.state.values()))["state1"].dtype == torch.uint8


def test_quantized_adamw_stays_close_to_fp32_adamw() -> None:
    p0, grads = _setup(2)
    fp32 = _ours("adamw", p0, grads, lr=1e-2)
    assert 0 < max_rel(_ours("adamw_8bit", p0, grads, lr=1e-2), fp32) < 2e-3
    assert 0 < max_rel(_ours("adamw_4bit", p0, grads, lr=1e-2), fp32) < 3e-2


def test_q_galore_tracks_fp32_galore_with_same_hyperparameters() -> None:
    p0, grads = _setup(3)
    qg = _ours("q_galore", p0, grads, rank=16, refresh=4)
    recipe = optim_core.presets.get("q_galore", rank=16, refresh=4)
    ref_recipe = _without_quantization(recipe)
    ref = _train(lambda ps: optim_core.build(ref_recipe, ps), p0, grads)[0]
    assert 0 < max_rel(qg, ref) < 5e-2


def _without_quantization(recipe: optim_core.Recipe) -> optim_core.Recipe:
    data = recipe.model_dump(mode="json", by_alias=True)

    def strip(stage: dict[str, Any]) -> None:
        if "state_bits" in stage:
            stage["state_bits"] = 32
        if stage.get("type") == "lowrank":
            stage["projector_bits"] = None
            for inner in stage["inner"]:
                strip(inner)

    for route in data["pipeline"]["routes"]:
        for stage in route["stages"]:
            strip(stage)
    return optim_core.Recipe.model_validate(data)


OURS = ["galore", "apollo", "apollo_mini", "frugal", "adamw_8bit", "adamw_4bit", "q_galore"]


@pytest.mark.parametrize("preset", OURS)
def test_state_bytes_analytical_equals_measured_on_llama_shapes(preset: str) -> None:
    shapes = llama_shapes(vocab=512, d=256, inter=688)  # 60M proportions, a quarter of the size
    recipe = optim_core.presets.get(preset)
    params = {n: torch.nn.Parameter(torch.zeros(s)) for n, s in shapes.items()}
    opt = optim_core.build(recipe, params)
    gen = torch.Generator().manual_seed(0)
    for p in params.values():
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    assert optim_core.state_bytes(recipe, shapes) == optim_core.measure_state_bytes(opt)


def test_state_bytes_formulas_on_llama_shapes() -> None:
    shapes = llama_shapes(vocab=1024, d=512, inter=1376)
    n_params = sum(math.prod(s) for s in shapes.values())
    fp32 = optim_core.state_bytes(optim_core.presets.get("adamw"), shapes)
    assert fp32 == 8 * n_params
    eight = optim_core.state_bytes(optim_core.presets.get("adamw_8bit"), shapes)
    assert eight <= 0.26 * fp32
    four = optim_core.state_bytes(optim_core.presets.get("adamw_4bit"), shapes)
    assert four <= 0.14 * fp32
    # GaLore at rank d/4 = 128: P (r·min) + m, v (2·r·max) per hidden matrix, fp32
    hidden = [s for n, s in shapes.items() if ".attn." in n or ".mlp." in n]
    others = n_params - sum(math.prod(s) for s in hidden)
    want = sum(4 * (128 * min(s) + 2 * 128 * max(s)) for s in hidden) + 8 * others
    assert optim_core.state_bytes(optim_core.presets.get("galore"), shapes) == want
    # APOLLO-Mini: rank 1 -> P (min) + m, v (2·max) + seed (8 B) + limiter norm (4 B)
    mini = sum(4 * (min(s) + 2 * max(s)) + 12 for s in hidden) + 8 * others
    assert optim_core.state_bytes(optim_core.presets.get("apollo_mini"), shapes) == mini


def test_bf16_params_state_accounting_and_dtype() -> None:
    shapes = llama_shapes(vocab=256, d=128, inter=344)
    for preset in OURS:
        recipe = optim_core.presets.get(preset)
        params = {n: torch.nn.Parameter(torch.randn(s).bfloat16()) for n, s in shapes.items()}
        opt = optim_core.build(recipe, params)
        for _ in range(2):
            for p in params.values():
                p.grad = torch.randn_like(p)
            opt.step()
        assert all(p.dtype == torch.bfloat16 and torch.isfinite(p).all() for p in params.values())
        got = optim_core.measure_state_bytes(opt)
        assert optim_core.state_bytes(recipe, shapes, torch.bfloat16) == got, preset


@pytest.mark.gpu
@pytest.mark.parametrize("preset", OURS)
def test_presets_on_cuda_bf16(preset: str) -> None:
    shapes = llama_shapes(vocab=256, d=128, inter=344)
    recipe = optim_core.presets.get(preset)
    gen = torch.Generator().manual_seed(0)
    params = {
        n: torch.nn.Parameter(torch.randn(s, generator=gen).to("cuda", torch.bfloat16))
        for n, s in shapes.items()
    }
    opt = optim_core.build(recipe, params)
    for _ in range(3):
        for p in params.values():
            p.grad = torch.randn_like(p)
        opt.step()
    assert all(p.dtype == torch.bfloat16 and torch.isfinite(p).all() for p in params.values())
    assert optim_core.state_bytes(
        recipe, shapes, torch.bfloat16
    ) == optim_core.measure_state_bytes(opt)


@pytest.mark.gpu
def test_blockwise_codes_equal_on_cpu_and_cuda() -> None:
    from optim_core.quantize import make_codec

    x = torch.randn(256, 384)
    for bits in (8, 4):
        for signed in (True, False):
            codec = make_codec(bits, signed=signed)
            t = x if signed else x.square()
            cpu, gpu = codec.encode(t), codec.encode(t.cuda())
            assert torch.equal(cpu["q"], gpu["q"].cpu())
            assert torch.allclose(cpu["scale"], gpu["scale"].cpu())
