"""Whole presets vs their reference packages on the ``synthetic-lm`` model's parameters (issue 12):
adam_mini vs adam-mini 1.1.1 (4 heads, 2 kv heads, biases), signum vs pytorch_optimizer SignSGD,
muon (matrices + aux AdamW) vs torch Muon + AdamW, and every exact preset over 50 steps.

Fixed random gradients are fed to both optimizers, so the comparison measures the update rules
only (no chaotic amplification through a loss). Error = max relative Frobenius difference of
the final parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import optim_core
from core.workloads import get_workload, named_shapes
from optim_core.compile import label_of

Shapes = dict[str, tuple[int, ...]]
RefFactory = Callable[[dict[str, torch.nn.Parameter]], list[torch.optim.Optimizer]]
SYNTH = get_workload("synthetic-lm")
SYNTH_SHAPES: Shapes = {n: tuple(s) for n, s in named_shapes(SYNTH).items()}


def _params(shapes: Shapes, dtype: torch.dtype) -> dict[str, torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return {
        n: torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for n, s in shapes.items()
    }


def run_pair(
    recipe: optim_core.Recipe,
    make_ref: RefFactory,
    shapes: Shapes = SYNTH_SHAPES,
    steps: int = 50,
    dtype: torch.dtype = torch.float32,
    **build_kw: object,
) -> float:
    ours, theirs = _params(shapes, dtype), _params(shapes, dtype)
    opt = optim_core.build(recipe, ours, **build_kw)  # type: ignore[arg-type]
    refs = make_ref(theirs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for name, shape in shapes.items():
            g = (torch.randn(shape, generator=gen) * 0.1).to(dtype)
            ours[name].grad, theirs[name].grad = g.clone(), g.clone()
        opt.step()
        for ref in refs:
            ref.step()
    return max(
        (
            (ours[n].detach().double() - theirs[n].detach().double()).norm() / theirs[n].norm()
        ).item()
        for n in shapes
    )


def _split(ps: dict[str, torch.nn.Parameter]) -> tuple[list, list]:
    mats = [p for n, p in ps.items() if label_of(n, tuple(p.shape)) == "matrix"]
    return mats, [p for n, p in ps.items() if label_of(n, tuple(p.shape)) != "matrix"]


def _torch_muon(lr: float) -> RefFactory:
    def make(ps: dict[str, torch.nn.Parameter]) -> list[torch.optim.Optimizer]:
        mats, others = _split(ps)
        muon = torch.optim.Muon(mats, lr=lr, weight_decay=0.0, momentum=0.95, nesterov=True)
        aux = torch.optim.AdamW(others, lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)
        return [muon, aux]

    return make


def test_muon_whole_preset_matches_torch_muon_plus_adamw() -> None:
    assert run_pair(optim_core.presets.get("muon"), _torch_muon(0.02)) <= 1e-6


def test_muon_lr_sweep_keeps_the_aux_adamw_lr() -> None:
    """Failed before: ``build(lr=0.05)`` also scaled the aux AdamW lr from 3e-4 to 7.5e-4."""
    err = run_pair(optim_core.presets.get("muon"), _torch_muon(0.05), steps=10, lr=0.05)
    assert err <= 1e-6


def _adam_mini_names(name: str) -> str:
    """Our LLaMA names in the naming adam-mini 1.1.1 partitions by (q_proj, k_proj, ...)."""
    for ours, theirs in (("attn.q.", "q_proj."), ("attn.k.", "k_proj."), ("attn.v.", "v_proj.")):
        name = name.replace(ours, theirs)
    return name.replace("attn.o.", "o_proj.")


def test_adam_mini_matches_adam_mini_1_1_1_with_gqa_and_biases() -> None:
    """4 heads, 2 kv heads (k/v have half the rows), biases: failed before (8 heads fixed,
    one scalar v per bias)."""
    adam_mini = pytest.importorskip("adam_mini")
    dim = 32
    shapes: Shapes = {
        "embed.weight": (64, dim),
        "layers.0.attn.q.weight": (dim, dim),
        "layers.0.attn.k.weight": (dim // 2, dim),
        "layers.0.attn.v.weight": (dim // 2, dim),
        "layers.0.attn.o.weight": (dim, dim),
        "layers.0.mlp.up.weight": (48, dim),
        "layers.0.mlp.up.bias": (48,),
        "layers.0.mlp.down.weight": (dim, 48),
        "layers.0.attn_norm.weight": (dim,),
        "lm_head.weight": (64, dim),
    }
    kw = {"lr": 1e-2, "weight_decay": 0.1}

    def make(ps: dict[str, torch.nn.Parameter]) -> list[torch.optim.Optimizer]:
        named = [(_adam_mini_names(n), p) for n, p in ps.items()]
        return [adam_mini.Adam_mini(named, dim=dim, n_heads=4, n_kv_heads=2, verbose=False, **kw)]

    recipe = optim_core.presets.get("adam_mini", n_heads=4, n_kv_heads=2, **kw)
    assert run_pair(recipe, make, shapes=shapes) <= 1e-6
    from_facts = optim_core.presets.get("adam_mini", **kw)  # heads from the model's facts
    facts = {"n_heads": 4, "n_kv_heads": 2}
    assert run_pair(from_facts, make, shapes=shapes, steps=5, model_facts=facts) <= 1e-6
    with pytest.warns(UserWarning, match="head count"):  # bare tensors, no facts: say so
        optim_core.build(from_facts, _params(shapes, torch.float32))


def test_signum_matches_pytorch_optimizer_signsgd() -> None:
    po = pytest.importorskip("pytorch_optimizer")
    recipe = optim_core.presets.get("signum", lr=1e-3, weight_decay=0.1)
    err = run_pair(
        recipe,
        lambda ps: [po.SignSGD(list(ps.values()), lr=1e-3, momentum=0.9, weight_decay=0.1)],
    )
    assert err <= 1e-6


def _torch(cls: type[torch.optim.Optimizer], **kw: object) -> RefFactory:
    return lambda ps: [cls(list(ps.values()), **kw)]  # type: ignore[call-arg]


EXACT: dict[str, tuple[dict[str, object], RefFactory]] = {
    "adamw": (
        {"lr": 1e-3, "weight_decay": 0.1},
        _torch(torch.optim.AdamW, lr=1e-3, weight_decay=0.1, foreach=False),
    ),
    "sgd": (
        {"lr": 1e-2, "weight_decay": 0.01, "nesterov": True},
        _torch(torch.optim.SGD, lr=1e-2, momentum=0.9, weight_decay=0.01, nesterov=True),
    ),
    "adafactor": ({"lr": 1e-2}, _torch(torch.optim.Adafactor, lr=1e-2, foreach=False)),
}  # muon: test_muon_whole_preset_matches_torch_muon_plus_adamw


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_presets_over_50_steps_on_synthetic_lm(name: str) -> None:
    overrides, make = EXACT[name]
    assert run_pair(optim_core.presets.get(name, **overrides), make) <= 1e-6


@pytest.mark.parametrize("name", [*sorted(EXACT), "muon"])
def test_exact_presets_with_bf16_params_stay_within_bf16_rounding(name: str) -> None:
    """bf16 parameters, bf16 state on both sides (torch.optim's rule). torch does the state
    arithmetic in bf16, we do it in fp32 and store bf16: measured 4e-4 (adamw) to 3.7e-3
    (adafactor) relative after 50 steps; bf16's unit roundoff is 3.9e-3."""
    overrides, make = EXACT[name] if name in EXACT else ({}, _torch_muon(0.02))
    recipe = optim_core.presets.get(name, **overrides)
    assert run_pair(recipe, make, dtype=torch.bfloat16) <= 1e-2


@pytest.mark.xfail(
    strict=True,
    reason="optim_core.quantize.BlockwiseCodec quantizes tensors whose numel is not a multiple "
    "of the 128 block (a partial last block); torchao keeps their state unquantized. Measured "
    "7.1e-4 on 100x50 against 2.4e-7 on 96x64 (quantize.py belongs to the speed work)",
)
def test_adamw_4bit_matches_torchao_on_non_block_multiple_sizes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ao = pytest.importorskip("torchao.optim")
    monkeypatch.setattr(torch, "compile", lambda fn=None, **kw: fn or (lambda f: f))  # eager
    shapes: Shapes = {
        "layers.0.attn.q.weight": (100, 50),  # 5000 elements: >= 4096, 5000 % 128 != 0
        "layers.0.mlp.up.weight": (96, 64),  # 6144 = 48 blocks: quantized on both sides
        "layers.0.attn_norm.weight": (50,),
    }
    recipe = optim_core.presets.get("adamw_4bit", lr=1e-3, weight_decay=0.01)
    make: RefFactory = lambda ps: [ao.AdamW4bit(list(ps.values()), lr=1e-3, weight_decay=0.01)]  # noqa: E731
    assert run_pair(recipe, make, shapes=shapes, steps=10) <= 1e-6
