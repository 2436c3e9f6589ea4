"""CUDA checks (skipped without a GPU): every preset steps bf16 params on CUDA, state accounting
holds there, and the fp32 CUDA step matches the CPU step."""

from __future__ import annotations

import pytest
import torch

import optim_core
from optim_core import presets, testing

pytestmark = pytest.mark.gpu


def _cuda_params(dtype: torch.dtype) -> dict[str, torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name, shape in testing.LLAMA_SHAPES.items():
        p = torch.nn.Parameter(torch.randn(shape, generator=gen).to("cuda", dtype))
        p.grad = torch.randn(shape, generator=gen).to("cuda", dtype)
        out[name] = p
    return out


@pytest.mark.parametrize("name", presets.names())
def test_preset_steps_bf16_on_cuda_with_exact_accounting(name: str) -> None:
    recipe = presets.get(name)
    params = _cuda_params(torch.bfloat16)
    opt = optim_core.build(recipe, params)
    opt.step()
    opt.step()
    for p in params.values():
        assert p.dtype == torch.bfloat16 and p.is_cuda
        assert torch.isfinite(p.float()).all()
    expected = optim_core.state_bytes(recipe, testing.LLAMA_SHAPES, torch.bfloat16)
    assert optim_core.measure_state_bytes(opt) == expected


@pytest.mark.parametrize("name", ["adamw", "sgd", "lion", "sinkgd", "scale", "adafactor"])
def test_cuda_fp32_step_matches_cpu(name: str) -> None:
    recipe = presets.get(name)
    gpu = _cuda_params(torch.float32)
    cpu = {n: torch.nn.Parameter(p.detach().cpu()) for n, p in gpu.items()}
    for n, p in cpu.items():
        p.grad = gpu[n].grad.cpu()
    optim_core.build(recipe, gpu).step()
    optim_core.build(recipe, cpu).step()
    for n in cpu:
        torch.testing.assert_close(gpu[n].detach().cpu(), cpu[n].detach(), rtol=1e-5, atol=1e-6)
