"""Preset-level property tests where no reference package exists (docs/references.md#equivalence-tests):
SinkGD, SCALE, SWAN, Signum; one step with lr 1 exposes the update ΔW = W0 − W1."""

from __future__ import annotations

import math

import torch

import optim_core
from optim_core import presets

SHAPES = {
    "embed.weight": (40, 16),
    "layers.0.attn.q.weight": (16, 16),
    "layers.0.mlp.up.weight": (48, 16),
    "layers.0.mlp.down.weight": (16, 48),
    "norm.weight": (16,),
    "lm_head.weight": (40, 16),
}


def _updates(recipe: optim_core.Recipe, lr: float = 1.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = {n: torch.nn.Parameter(torch.randn(s, generator=gen)) for n, s in SHAPES.items()}
    start = {n: p.detach().clone() for n, p in params.items()}
    for p in params.values():
        p.grad = torch.randn(p.shape, generator=gen)
    optim_core.build(recipe, params, lr=lr).step()
    return {n: start[n] - params[n].detach() for n in SHAPES}


def test_sinkgd_matrix_columns_have_l2_sqrt_m() -> None:
    recipe = presets.get("sinkgd", alpha=1.0)
    for name, d in _updates(recipe).items():
        if name.startswith("layers"):
            m = d.shape[0]
            torch.testing.assert_close(d.norm(dim=0), torch.full((d.shape[1],), math.sqrt(m)))
            rows = d.norm(dim=1) / math.sqrt(d.shape[1])
            assert (rows - 1).abs().max() < 0.05  # rows converge to ℓ2 √n


def test_scale_rows_and_embedding_columns_have_rms_one() -> None:
    d = _updates(presets.get("scale"))
    for name in ("layers.0.attn.q.weight", "layers.0.mlp.up.weight", "lm_head.weight"):
        rms = d[name].square().mean(dim=1).sqrt()
        torch.testing.assert_close(rms, torch.ones_like(rms))
    emb = d["embed.weight"].square().mean(dim=0).sqrt()
    torch.testing.assert_close(emb, torch.ones_like(emb))


def test_scale_state_only_on_head_and_vectors() -> None:
    recipe = presets.get("scale")
    shapes = dict(SHAPES)
    head_and_vec = 40 * 16 * 4 + 2 * 16 * 4  # head EMA + Adam m, v of the gain
    assert optim_core.state_bytes(recipe, shapes) == head_and_vec


def test_swan_matrix_update_is_the_exact_polar_factor() -> None:
    updates = _updates(presets.get("swan"))
    for name in ("layers.0.mlp.down.weight", "layers.0.mlp.up.weight"):  # wide and tall
        d = updates[name]
        small = min(d.shape)
        gram = d @ d.T if d.shape[0] == small else d.T @ d
        torch.testing.assert_close(gram, torch.eye(small), atol=1e-4, rtol=0)
    rescaled = _updates(presets.get("swan", rescale=True))["layers.0.mlp.down.weight"]
    assert abs(rescaled.norm().item() - math.sqrt(16 * 48)) < 1e-2  # third-party RMS 1
    # a standardized square matrix is singular: finite, rank n-1
    q = updates["layers.0.attn.q.weight"]
    assert torch.isfinite(q).all()
    assert torch.linalg.matrix_rank(q).item() == 15


def test_signum_update_is_a_sign() -> None:
    d = _updates(presets.get("signum"), lr=0.5)
    for t in d.values():
        a = t.abs()
        assert torch.minimum(a, (a - 0.5).abs()).max() < 1e-5


def test_muon_matrix_update_is_near_orthogonal() -> None:
    recipe = presets.get("muon")
    d = _updates(recipe, lr=1.0)["layers.0.mlp.up.weight"]  # 48×16: scale √3 on the lr
    s = torch.linalg.svdvals(d / math.sqrt(3))
    assert 0.6 < s.min().item() and s.max().item() < 1.25


def _adam_mini_by_hand(
    w: torch.Tensor, grads: list[torch.Tensor], blocks: int | None, lr: float, wd: float
) -> torch.Tensor:
    """Adam-mini (docs/references.md#adam-mini) written out: blocks = rows per v (None: one scalar v)."""
    w = w.clone()
    m = torch.zeros_like(w)
    v = torch.zeros(()) if blocks is None else torch.zeros(blocks, 1)
    for t, g in enumerate(grads, start=1):
        w.mul_(1 - lr * wd)
        m = 0.9 * m + 0.1 * g
        gs = g.reshape(blocks, -1) if blocks is not None else g
        mean_sq = gs.square().mean() if blocks is None else gs.square().mean(dim=1, keepdim=True)
        v = 0.999 * v + 0.001 * mean_sq
        denom = v.sqrt() / math.sqrt(1 - 0.999**t) + 1e-8
        mb = m.reshape(blocks, -1) if blocks is not None else m
        w -= (lr * (mb / (1 - 0.9**t)) / denom).reshape(w.shape)
    return w


def test_adam_mini_matches_straight_implementation() -> None:
    shapes = {
        "layers.0.attn.q.weight": (32, 16),
        "layers.0.mlp.up.weight": (24, 16),
        "layers.0.attn_norm.weight": (16,),
    }
    blocks = {"layers.0.attn.q.weight": 4, "layers.0.mlp.up.weight": 24}
    gen = torch.Generator().manual_seed(0)
    w0 = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    grads = {n: [torch.randn(s, generator=gen) for _ in range(10)] for n, s in shapes.items()}
    params = {n: torch.nn.Parameter(w.clone()) for n, w in w0.items()}
    opt = optim_core.build(presets.get("adam_mini", lr=1e-2, weight_decay=0.1, n_heads=4), params)
    for i in range(10):
        for n in shapes:
            params[n].grad = grads[n][i]
        opt.step()
    for n in shapes:
        wd = 0.0 if n.endswith("norm.weight") else 0.1
        ref = _adam_mini_by_hand(w0[n], grads[n], blocks.get(n), 1e-2, wd)
        assert ((params[n].detach() - ref).norm() / ref.norm()).item() < 1e-6
    per_param = 4 * (32 * 16 + 4) + 4 * (24 * 16 + 24) + 4 * (16 + 1)
    assert optim_core.state_bytes(presets.get("adam_mini", n_heads=4), shapes) == per_param
