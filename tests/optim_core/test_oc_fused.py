"""Grouped quantized-Adam path (optim_core.fused via optim_core.grouped): equal to the per-stage
path, the compile switch and its plumbing (a real compile only on CUDA: on this CPU a first
compile takes minutes and the compiled step was slower than eager, docs/benchmarks.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

import optim_core
from optim_core import fused
from optim_core.recipe import AdamSpec, Pipeline, Recipe, Route

SHAPES = {
    "layers.0.attn.q.weight": (64, 128),  # 8192: quantized, block multiple
    "layers.0.mlp.up.weight": (100, 50),  # 5000: 8-bit partial last block; 4-bit fp32 (torchao)
    "layers.0.attn_norm.weight": (64,),  # small: fp32 state
}


@pytest.fixture(autouse=True)
def _default_policy() -> Iterator[None]:
    yield
    fused.set_compile(None)


def _recipe(bits: int, style: str = "torch", wd_mode: str = "decoupled_before") -> Recipe:
    adam = AdamSpec(beta1=0.9, beta2=0.95, style=style, state_bits=bits)  # type: ignore[arg-type]
    route = Route(stages=[adam], wd_mode=wd_mode)  # type: ignore[arg-type]
    return Recipe(lr=1e-2, weight_decay=0.1, pipeline=Pipeline(routes=[route]))


def _train(recipe: Recipe, steps: int = 6, **kw: Any) -> tuple[dict, torch.optim.Optimizer]:
    gen = torch.Generator().manual_seed(0)
    params = {n: torch.nn.Parameter(torch.randn(s, generator=gen)) for n, s in SHAPES.items()}
    opt = optim_core.build(recipe, params, **kw)
    for _ in range(steps):
        for p in params.values():
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return {n: p.detach().clone() for n, p in params.items()}, opt


def _max_rel(a: dict, b: dict) -> float:
    return max(float((a[n] - b[n]).norm() / b[n].norm()) for n in a)


@pytest.mark.parametrize(
    ("bits", "style", "wd_mode"),
    [
        (8, "torch", "decoupled_before"),
        (4, "torch", "decoupled_before"),
        (8, "hf", "decoupled_after"),
        (4, "torch", "decoupled_after"),
    ],
)
def test_grouped_quantized_step_equals_per_stage_path(bits: int, style: str, wd_mode: str) -> None:
    recipe = _recipe(bits, style, wd_mode)
    fast, fast_opt = _train(recipe)
    slow, slow_opt = _train(recipe, foreach=False)
    assert _max_rel(fast, slow) < 1e-6
    moved, _ = _train(recipe, steps=0)
    assert _max_rel(fast, moved) > 1e-3  # the steps did something
    for p_fast, p_slow in zip(fast_opt.state.values(), slow_opt.state.values(), strict=True):
        assert p_fast.keys() == p_slow.keys()
        for key in p_fast:  # codes and block scales come from the same m, v: identical
            assert torch.equal(p_fast[key], p_slow[key]), key
    quantized = [s for s in fast_opt.state.values() if "0.adam.m.q" in s]
    assert len(quantized) == (2 if bits == 8 else 1)


def test_compile_policy_defaults_and_switch() -> None:
    assert not fused.compile_enabled(torch.device("cpu"))
    assert fused.compile_enabled(torch.device("cuda"))
    fused.set_compile(True)
    assert fused.compile_enabled(torch.device("cpu"))
    fused.set_compile(False)
    assert not fused.compile_enabled(torch.device("cuda"))


def test_switch_routes_quantized_steps_through_torch_compile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the switch on, steps call the ``torch.compile`` wrapper once per process with 0-d
    tensor scalars (no recompiles per step); the traced variant (unpacked 4-bit decode,
    tensor scalars) equals the eager one."""
    calls: list[dict[str, Any]] = []

    def fake_compile(fn: Any, **kw: Any) -> Any:
        calls.append(kw)

        def run(*args: Any) -> Any:
            scalars = args[5]
            assert isinstance(scalars.step_size, torch.Tensor) and scalars.step_size.ndim == 0
            return fn(*args)

        return run

    monkeypatch.setattr(fused, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", fake_compile)
    eager, _ = _train(_recipe(4))
    fused.set_compile(True)
    traced, _ = _train(_recipe(4))
    assert calls == [{"dynamic": True}]
    assert _max_rel(traced, eager) < 1e-6


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [8, 4])
def test_compiled_step_on_cuda_equals_eager(bits: int) -> None:
    recipe = _recipe(bits)
    gen = torch.Generator().manual_seed(1)
    init = {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
    grads = [{n: torch.randn(s, generator=gen) for n, s in SHAPES.items()} for _ in range(4)]
    out = []
    for enabled in (False, True):
        fused.set_compile(enabled)
        params = {n: torch.nn.Parameter(t.cuda()) for n, t in init.items()}
        opt = optim_core.build(recipe, params)
        for g in grads:
            for n, p in params.items():
                p.grad = g[n].cuda()
            opt.step()
        out.append({n: p.detach().cpu() for n, p in params.items()})
    assert _max_rel(out[1], out[0]) < 1e-5


@pytest.mark.parametrize("bits", [8, 4])
def test_eager_chunks_step_bit_for_bit_as_the_whole_tensor(
    bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks start on whole blocks (and whole bytes of packed codes): a chunked step gives the
    same weights, codes and block scales as one pass over the tensor; 8-bit's partial last
    block (5000 = 19 x 256 + 136) lands in the last chunk."""
    calls: list[int] = []
    real = fused.quantized_adam_

    def counted(p: torch.Tensor, *args: Any) -> Any:
        calls.append(p.numel())
        return real(p, *args)

    monkeypatch.setattr(fused, "quantized_adam_", counted)
    runs = {}
    for chunk in (1 << 30, 512):
        monkeypatch.setattr(fused, "CHUNK_NUMEL", chunk)
        calls.clear()
        runs[chunk] = _train(_recipe(bits), steps=3)
        sizes = [8192, 5000] if bits == 8 else [8192]  # the quantized parameters
        assert len(calls) == 3 * sum(-(-n // chunk) for n in sizes), calls
    (whole, whole_opt), (chunked, chunked_opt) = runs[1 << 30], runs[512]
    for n in whole:
        assert torch.equal(whole[n], chunked[n]), n
    for a, b in zip(whole_opt.state.values(), chunked_opt.state.values(), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
