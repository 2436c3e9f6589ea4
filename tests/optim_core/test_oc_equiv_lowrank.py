"""galore / apollo / apollo_mini presets (through optim_core.build) against the real packages.

docs/references.md#equivalence-tests: 10 steps of pre-generated Gaussian gradients on a 64×48 and a 48×64 hidden
matrix plus a 64-vector; error = relative Frobenius difference of the final parameters.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from replay import Grads, max_rel, replay, seeded_setup

import optim_core

SHAPES = {
    "layers.0.attn.q.weight": (64, 48),
    "layers.0.mlp.down.weight": (48, 64),
    "layers.0.attn_norm.weight": (64,),
}
MATRICES = ["layers.0.attn.q.weight", "layers.0.mlp.down.weight"]
STEPS = 10


def _setup(seed: int) -> tuple[dict[str, torch.Tensor], Grads]:
    return seeded_setup(SHAPES, STEPS, seed)


def _train(opt_factory: Any, p0: dict, grads: Grads) -> dict[str, torch.Tensor]:
    return replay(opt_factory, p0, grads)[0]


def _groups(params: dict, **lowrank: Any) -> list[dict[str, Any]]:
    """Matrices first (1-based indices 1, 2 as in our named order), then the vector."""
    mats = [params[n] for n in MATRICES]
    return [{"params": mats, **lowrank}, {"params": [params["layers.0.attn_norm.weight"]]}]


@pytest.mark.parametrize("refresh", [200, 4])
def test_galore_preset_equals_galore_torch(refresh: int) -> None:
    galore_torch = pytest.importorskip("galore_torch")
    p0, grads = _setup(0)
    recipe = optim_core.presets.get("galore", rank=8, refresh=refresh, weight_decay=0.01)
    ours = _train(lambda ps: optim_core.build(recipe, ps), p0, grads)

    def ref_opt(ps: dict) -> torch.optim.Optimizer:
        kw = {"rank": 8, "update_proj_gap": refresh, "scale": 0.25, "proj_type": "std"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return galore_torch.GaLoreAdamW(_groups(ps, **kw), lr=0.01, weight_decay=0.01)

    ref = _train(ref_opt, p0, grads)
    assert max_rel(ours, ref) < 1e-6


@pytest.mark.parametrize(
    ("preset", "rank", "granularity", "alpha", "front"),
    [
        ("apollo", 8, "channel", 1.0, False),
        ("apollo_mini", 1, "tensor", 128.0, True),
        ("apollo_mini", 1, "tensor", 128.0, False),
    ],
)
def test_apollo_presets_equal_apollo_torch(
    preset: str, rank: int, granularity: str, alpha: float, front: bool
) -> None:
    apollo_torch = pytest.importorskip("apollo_torch")
    p0, grads = _setup(1)
    recipe = optim_core.presets.get(preset, rank=rank, refresh=4, scale_front=front)
    ours = _train(lambda ps: optim_core.build(recipe, ps), p0, grads)

    def ref_opt(ps: dict) -> torch.optim.Optimizer:
        kw = {"rank": rank, "proj": "random", "scale_type": granularity, "scale": alpha}
        kw |= {"update_proj_gap": 4, "proj_type": "std"}
        return apollo_torch.APOLLOAdamW(_groups(ps, **kw), lr=0.01, eps=1e-6, scale_front=front)

    ref = _train(ref_opt, p0, grads)
    assert max_rel(ours, ref) < 1e-6


def test_frugal_preset_properties() -> None:
    """FRUGAL has no package: the matrix update is a low-rank Adam step plus sign-SGD on the
    residual, so each entry moves by at least lr·|sign| off the projected subspace; with the
    complement dropped it equals a GaLore-like torch-Adam step."""
    p0, grads = _setup(2)
    frugal = optim_core.presets.get("frugal", variant="galore", rank=8, lr=1e-3)
    ours = _train(lambda ps: optim_core.build(frugal, ps), p0, grads[:1])
    name = "layers.0.attn.q.weight"
    delta = p0[name] - ours[name]
    g = grads[0][name]
    _, _, vh = torch.linalg.svd(g, full_matrices=False)
    proj = vh[:8]
    residual = g - g @ proj.t() @ proj
    adam_part = (delta / 1e-3) - torch.sign(residual)
    # the Adam part lives in the row space of the projector: its residual is ~0
    assert (adam_part - adam_part @ proj.t() @ proj).abs().max().item() < 1e-3
    # first torch-Adam step on R = G·Pᵀ is sign(R) (up to eps) -> back-projected
    r = g @ proj.t()
    assert torch.allclose(adam_part, torch.sign(r) @ proj, atol=1e-3)
