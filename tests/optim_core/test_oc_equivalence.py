"""optim_core presets vs the real reference optimizers (docs/references.md#equivalence-tests: 10 steps, random
gradients, shapes 64×48, 48×64 and a 64-vector, relative Frobenius error of the final params)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import optim_core

SHAPES = {
    "layers.0.attn.q.weight": (64, 48),
    "layers.0.mlp.down.weight": (48, 64),
    "layers.0.attn_norm.weight": (64,),
}
MATRICES = {k: v for k, v in SHAPES.items() if len(v) == 2}


def _params(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return {n: torch.nn.Parameter(torch.randn(s, generator=gen)) for n, s in shapes.items()}


def _run_pair(
    recipe: optim_core.Recipe,
    make_ref: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
    shapes: dict[str, tuple[int, ...]] = SHAPES,
    steps: int = 10,
) -> float:
    ours, theirs = _params(shapes), _params(shapes)
    opt = optim_core.build(recipe, ours)
    ref = make_ref(list(theirs.values()))
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for name in shapes:
            g = torch.randn(shapes[name], generator=gen)
            ours[name].grad = g.clone()
            theirs[name].grad = g.clone()
        opt.step()
        ref.step()
    worst = 0.0
    for name in shapes:
        a, b = ours[name].detach(), theirs[name].detach()
        worst = max(worst, ((a - b).norm() / b.norm()).item())
    return worst


def test_adamw_matches_torch_adamw() -> None:
    recipe = optim_core.presets.get("adamw", lr=1e-2, weight_decay=0.1)
    err = _run_pair(
        recipe, lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, foreach=False)
    )
    assert err <= 1e-7


def test_sgd_nesterov_coupled_l2_matches_torch_sgd() -> None:
    recipe = optim_core.presets.get("sgd", lr=1e-2, weight_decay=0.01, nesterov=True)
    err = _run_pair(
        recipe,
        lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.01),
    )
    assert err <= 1e-6


def test_sgd_plain_and_dampened_match_torch_sgd() -> None:
    plain = optim_core.presets.get("sgd", lr=1e-2, momentum=0.0)
    assert _run_pair(plain, lambda ps: torch.optim.SGD(ps, lr=1e-2)) <= 1e-6
    damp = optim_core.presets.get("sgd", lr=1e-2, dampening=0.5)
    ref = lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, dampening=0.5)  # noqa: E731
    assert _run_pair(damp, ref) <= 1e-6


def test_adafactor_matches_torch_adafactor() -> None:
    recipe = optim_core.presets.get("adafactor", lr=1e-2, weight_decay=0.01)
    err = _run_pair(
        recipe,
        lambda ps: torch.optim.Adafactor(ps, lr=1e-2, weight_decay=0.01, foreach=False),
    )
    assert err <= 1e-6


def test_muon_matches_torch_muon_on_matrices() -> None:
    recipe = optim_core.presets.get("muon", lr=0.02, weight_decay=0.01)
    err = _run_pair(
        recipe,
        lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.01, momentum=0.95, nesterov=True),
        shapes=MATRICES,
    )
    assert err <= 1e-7


def test_lion_matches_lion_pytorch() -> None:
    lion_pytorch = pytest.importorskip("lion_pytorch")
    recipe = optim_core.presets.get("lion", lr=1e-3, weight_decay=0.1)
    err = _run_pair(
        recipe,
        lambda ps: lion_pytorch.Lion(ps, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1),
    )
    assert err <= 1e-7


def test_design_adam_equals_adamw_preset() -> None:
    """The design form ``norms: [adam]`` compiles to AdamW on every route (same hash too)."""
    design = optim_core.Recipe.model_validate(
        {"schema": 1, "lr": 1e-2, "weight_decay": 0.1, "design": {"norms": ["adam"]}}
    )
    preset = optim_core.presets.get("adamw", lr=1e-2, weight_decay=0.1)
    err = _run_pair(
        design, lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, foreach=False)
    )
    assert err <= 1e-7
    assert optim_core.state_bytes(design, SHAPES) == optim_core.state_bytes(preset, SHAPES)
