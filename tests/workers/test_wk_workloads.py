"""Workload catalog (core.workloads, no torch) against the real models (workers.model)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from core.errors import NotFound
from core.workloads import WORKLOADS, get_workload, named_shapes
from workers.model import LlamaConfig, LlamaModel, apply_rope, build_model, rope_tables


def test_catalog_imports_without_torch() -> None:
    code = (
        "import sys, core.workloads as w; w.get_workload('synthetic-lm').n_params; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_workload_lists_valid_names() -> None:
    with pytest.raises(NotFound, match="synthetic-lm.*shakespeare-lm"):
        get_workload("nope")


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_named_shapes_equal_model_parameters(name: str) -> None:
    spec = get_workload(name)
    with torch.device("meta"):
        model = build_model(spec.model, seed=None)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes == named_shapes(spec)
    assert list(shapes) == list(named_shapes(spec))  # same order too
    assert spec.n_params == sum(p.numel() for p in model.parameters())
    assert spec.default_steps <= spec.max_steps and spec.eval_every <= spec.default_steps


def test_galore_protocol_sizes() -> None:
    # docs/references.md#galore-protocol: exact parameter counts with untied embedding/head, V = 32000.
    expected = {"tokens-lm": 58.07e6, "tokens-lm-130m": 134.11e6, "tokens-lm-350m": 367.97e6}
    for name, n in expected.items():
        assert get_workload(name).n_params == pytest.approx(n, abs=0.006e6)
    assert 0.7e6 < get_workload("shakespeare-lm").n_params < 1.2e6


def test_parameter_names_follow_routing_contract() -> None:
    names = set(named_shapes(get_workload("shakespeare-lm")))
    for expected in (
        "embed.weight",
        "layers.0.attn.q.weight",
        "layers.0.attn.o.weight",
        "layers.0.mlp.gate.weight",
        "layers.0.mlp.down.weight",
        "layers.0.attn_norm.weight",
        "layers.0.mlp_norm.weight",
        "norm.weight",
        "lm_head.weight",
    ):
        assert expected in names


def test_llama_forward_is_causal_and_shaped() -> None:
    cfg = LlamaConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, ffn_dim=24, max_seq_len=12)
    model = LlamaModel(cfg)
    x = torch.randint(0, 50, (3, 10))
    logits = model(x)
    assert logits.shape == (3, 10, 50)
    x2 = x.clone()
    x2[:, 6:] = (x2[:, 6:] + 1) % 50  # changing the future must not change the past
    assert torch.allclose(model(x2)[:, :6], logits[:, :6], atol=1e-6)
    assert not torch.allclose(model(x2)[:, 6:], logits[:, 6:])


def test_rope_preserves_norm_and_relative_position() -> None:
    cos, sin = rope_tables(8, 16, 10_000.0)
    q = torch.randn(1, 1, 16, 8)
    rq = apply_rope(q, cos, sin)
    assert torch.allclose(rq.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    # <R_i q, R_j k> depends only on i - j
    v = torch.randn(8)
    same = torch.stack([v] * 16).view(1, 1, 16, 8)
    r = apply_rope(same, cos, sin)[0, 0]
    assert math.isclose(float(r[3] @ r[1]), float(r[7] @ r[5]), rel_tol=1e-4)


def test_seeded_init() -> None:
    spec = get_workload("synthetic-lm")
    a, b, c = build_model(spec.model, 1), build_model(spec.model, 1), build_model(spec.model, 2)
    for (n, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb)
        if pa.ndim == 2:
            assert not torch.equal(pa, pc), n
            assert 0.015 < float(pa.detach().std()) < 0.025
        else:
            assert torch.equal(pa, torch.ones_like(pa))
