"""FRUGAL Block variant (issue 12 item 2) against a literal restatement of FRUGAL's
``BlockOptimizer`` (docs/references.md#frugal; no package exists): active set, rotation order, statistics
reset, signSGD on inactive matrices, and exact state bytes (only active matrices hold state)."""

from __future__ import annotations

import math

import pytest
import torch

import optim_core
from optim_core.frugal_block import active_positions
from optim_core.testing import llama_shapes

SHAPES = llama_shapes(vocab=32, d=16, inter=24, layers=2)  # 14 hidden matrices
MATRICES = [n for n, s in SHAPES.items() if n.startswith("layers") and len(s) == 2]
LR, T = 1e-2, 4


def _reference_block_run(order: str, density: float, steps: int, grads: list[dict]) -> dict:
    """FRUGAL BlockOptimizer restated: every T steps deactivate all (drop m, v, step), activate
    the next blocks (``next_block_start`` walk), Adam (torch style) on active, sign on the rest;
    regular params: AdamW without resets."""
    gen = torch.Generator().manual_seed(0)
    w = {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
    n, k = len(MATRICES), round(len(MATRICES) * density)
    adam: dict[str, list] = {}
    start = n - 1 if order == "descending" else 0
    others = {x: [torch.zeros_like(w[x]), torch.zeros_like(w[x]), 0] for x in SHAPES}
    for t in range(steps):
        if t % T == 0:
            idx = range(start, start - k, -1) if order == "descending" else range(start, start + k)
            active = [MATRICES[i % n] for i in idx]
            adam = {x: [torch.zeros_like(w[x]), torch.zeros_like(w[x]), 0] for x in active}
            start = (start - k) % n if order == "descending" else (start + k) % n
        for name, g in grads[t].items():
            if name in MATRICES and name not in adam:
                w[name] -= LR * torch.sign(g)
                continue
            m, v, step = adam[name] if name in MATRICES else others[name]
            step += 1
            m.lerp_(g, 0.1)
            v.mul_(0.999).addcmul_(g, g, value=0.001)
            denom = v.sqrt() / math.sqrt(1 - 0.999**step) + 1e-8
            w[name] -= LR / (1 - 0.9**step) * m / denom
            (adam if name in MATRICES else others)[name][2] = step
    return w


def _grads(steps: int) -> list[dict]:
    gen = torch.Generator().manual_seed(1)
    return [{n: torch.randn(s, generator=gen) for n, s in SHAPES.items()} for _ in range(steps)]


def _ours(steps: int, grads: list[dict], **kw: object) -> tuple[dict, torch.optim.Optimizer]:
    gen = torch.Generator().manual_seed(0)
    params = {n: torch.nn.Parameter(torch.randn(s, generator=gen)) for n, s in SHAPES.items()}
    recipe = optim_core.presets.get("frugal", lr=LR, refresh=T, **kw)
    opt = optim_core.build(recipe, params)
    for t in range(steps):
        for name, p in params.items():
            p.grad = grads[t][name].clone()
        opt.step()
    return {n: p.detach() for n, p in params.items()}, opt


@pytest.mark.parametrize("order", ["descending", "ascending"])
def test_block_variant_matches_the_reference_rule(order: str) -> None:
    """Failed before: only the GaLore-type split existed (no 'variant' / 'order')."""
    steps = 3 * T + 1  # three rotations and the first step of a fourth
    grads = _grads(steps)
    ours, _ = _ours(steps, grads, variant="block", density=0.25, order=order)
    ref = _reference_block_run(order, 0.25, steps, grads)
    for name in SHAPES:
        assert ((ours[name] - ref[name]).norm() / ref[name].norm()).item() < 1e-6, name


def test_active_sets_follow_the_order() -> None:
    assert active_positions(14, 4, "descending", 0) == {13, 12, 11, 10}
    assert active_positions(14, 4, "descending", 4) == {11, 10, 9, 8}  # wraps: 13 - 16 = -3
    assert active_positions(14, 4, "ascending", 3) == {12, 13, 0, 1}
    assert active_positions(14, 4, "mirror", 0) == {0, 1, 12, 13}
    assert active_positions(14, 4, "mirror", 1) == {2, 3, 10, 11}
    drawn = active_positions(14, 4, "random", 2)
    assert len(drawn) == 4 and drawn == active_positions(14, 4, "random", 2)
    with pytest.raises(ValueError, match="mirror"):
        optim_core.build(optim_core.presets.get("frugal", order="mirror", density=0.2), SHAPES_P)


SHAPES_P = {n: torch.nn.Parameter(torch.zeros(s)) for n, s in SHAPES.items()}


def test_only_active_matrices_hold_state_and_accounting_is_exact() -> None:
    steps = T + 1  # into the second rotation: the first active set's state is dropped
    grads = _grads(steps)
    recipe = optim_core.presets.get("frugal", lr=LR, refresh=T)
    _, opt = _ours(steps, grads)
    others = sum(8 * math.prod(s) for n, s in SHAPES.items() if n not in MATRICES)
    active = [MATRICES[i] for i in active_positions(len(MATRICES), 4, "descending", 1)]
    want = others + sum(8 * math.prod(SHAPES[n]) for n in active)
    assert optim_core.measure_state_bytes(opt) == want
    first = [MATRICES[i] for i in active_positions(len(MATRICES), 4, "descending", 0)]
    assert optim_core.state_bytes(recipe, SHAPES) == others + sum(
        8 * math.prod(SHAPES[n]) for n in first
    )
    # an inactive matrix keeps nothing but its step counter
    held = [n for n, p in _named(opt).items() if n in MATRICES and len(opt.state[p]) > 1]
    assert sorted(held) == sorted(active)


def _named(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    return {opt._names[p]: p for g in opt.param_groups for p in g["params"]}  # type: ignore[attr-defined]


def test_full_density_is_adamw_with_resets_every_t() -> None:
    steps = 2 * T
    grads = _grads(steps)
    ours, _ = _ours(steps, grads, variant="block", density=1.0)
    gen = torch.Generator().manual_seed(0)
    ref = {n: torch.nn.Parameter(torch.randn(s, generator=gen)) for n, s in SHAPES.items()}
    mats = [ref[n] for n in MATRICES]
    rest = torch.optim.AdamW(
        [p for n, p in ref.items() if n not in MATRICES], lr=LR, weight_decay=0
    )
    for t in range(steps):
        if t % T == 0:
            fresh = torch.optim.AdamW(mats, lr=LR, weight_decay=0.0)
        for name, p in ref.items():
            p.grad = grads[t][name].clone()
        fresh.step()
        rest.step()
    for name in SHAPES:
        assert ((ours[name] - ref[name].detach()).norm() / ref[name].norm()).item() < 1e-6


def test_galore_variant_keeps_the_former_preset() -> None:
    stage = optim_core.presets.get("frugal", variant="galore").to_pipeline().routes[0].stages[0]
    assert stage.type == "lowrank" and stage.complement == "sign"  # type: ignore[union-attr]
    assert stage.reset_on_refresh and stage.rank == 0.25  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="density"):
        optim_core.presets.get("frugal", rank=8)
    _, opt = _ours(T + 1, _grads(T + 1), variant="galore")  # past one refresh
    recipe = optim_core.presets.get("frugal", lr=LR, refresh=T, variant="galore")
    assert optim_core.state_bytes(recipe, SHAPES) == optim_core.measure_state_bytes(opt)
