"""Low-rank projection: pure functions, the LowRank stage on its own, FRUGAL/APOLLO properties."""

from __future__ import annotations

import math

import pytest
import torch

from optim_core.adaptive import Adam
from optim_core.lowrank import (
    LowRank,
    gaussian_projector,
    limit_norm_growth,
    low_rank_shape,
    next_seed,
    norm_ratio,
    project,
    project_back,
    projection_side,
    resolve_rank,
    svd_projector,
)
from optim_core.quantize import MinMaxCodec, make_codec


def _grads(shape: tuple[int, ...], steps: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(steps)]


def _bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def test_resolve_rank_int_fraction_and_errors() -> None:
    assert resolve_rank(8, (64, 48)) == 8
    assert resolve_rank(0.25, (64, 48)) == 12
    assert resolve_rank(0.001, (64, 48)) == 1
    assert resolve_rank(48, (64, 48)) == 48
    with pytest.raises(ValueError, match=r"rank.*49.*min\(m, n\) = 48.*'layers.0.q.weight'"):
        resolve_rank(49, (64, 48), "layers.0.q.weight")
    with pytest.raises(ValueError, match="rank"):
        resolve_rank(0, (64, 48))
    with pytest.raises(ValueError, match="expected a >=2-D shape"):
        resolve_rank(4, (64,))


def test_sides_and_shapes_follow_galore_std_rule() -> None:
    assert projection_side((64, 48)) == "right" and low_rank_shape((64, 48), 8) == (64, 8)
    assert projection_side((48, 64)) == "left" and low_rank_shape((48, 64), 8) == (8, 64)
    assert projection_side((32, 32)) == "right"


@pytest.mark.parametrize("shape", [(64, 48), (48, 64)])
def test_svd_projector_orthonormal_and_full_rank_round_trip(shape: tuple[int, int]) -> None:
    g = torch.randn(shape, dtype=torch.float64).float()
    side = projection_side(shape)
    p = svd_projector(g, 8, side)
    gram = p @ p.t() if side == "right" else p.t() @ p
    assert torch.allclose(gram, torch.eye(8), atol=1e-5)
    full = svd_projector(g, min(shape), side)
    assert torch.allclose(project_back(project(g, full, side), full, side), g, atol=1e-4)
    # top-r projection keeps the top-r singular values of G
    s = torch.linalg.svdvals(g)
    assert torch.allclose(torch.linalg.svdvals(project(g, p, side)), s[:8], rtol=1e-4)


def test_gaussian_projector_and_seed_match_apollo_torch() -> None:
    rp = pytest.importorskip("apollo_torch.random_projector")
    ours = gaussian_projector(64, 48, 8, "right", seed=3, device=torch.device("cpu"))
    ref = rp.stable_randn((8, 48), seed=3) / math.sqrt(8)
    assert torch.equal(ours, ref)
    assert next_seed(3) == rp.next_seed(3)
    assert gaussian_projector(48, 64, 8, "left", 3, torch.device("cpu")).shape == (48, 8)


def test_norm_ratio_channel_and_tensor() -> None:
    n, r = torch.randn(64, 8), torch.randn(64, 8)
    s = norm_ratio(n, r, "right", "channel")
    assert s.shape == (64, 1)
    assert torch.allclose(s[:, 0], n.norm(dim=1) / (r.norm(dim=1) + 1e-8))
    left = norm_ratio(torch.randn(8, 64), torch.randn(8, 64), "left", "channel")
    assert left.shape == (64,)
    t = norm_ratio(n, r, "right", "tensor")
    assert t.ndim == 0 and torch.isclose(t, n.norm() / (r.norm() + 1e-8))


def test_norm_growth_limiter_caps_growth_at_gamma() -> None:
    s1 = torch.ones(10)
    out, prev = limit_norm_growth(s1, None)
    assert torch.equal(out, s1) and torch.isclose(prev, s1.norm())
    out2, prev2 = limit_norm_growth(5 * s1, prev)  # grows 5x -> capped at 1.01x
    assert torch.isclose(out2.norm() / prev, torch.tensor(1.01), rtol=1e-5)
    assert torch.isclose(prev2, out2.norm(), rtol=1e-6)
    out3, _ = limit_norm_growth(0.5 * s1, prev2)  # shrinking passes unchanged
    assert torch.equal(out3, 0.5 * s1)


def _run(stage: LowRank, p0: torch.Tensor, grads: list[torch.Tensor], lr: float, seed: int = 0):
    p = p0.clone()
    state = stage.init_at(p, seed)
    outs = []
    for t, g in enumerate(grads, 1):
        out = stage.update(g.clone(), state, p, t)
        outs.append(out)
        p.add_(out, alpha=-stage.scale_lr(lr, p, state, t))
    return p, state, outs


def _ref_params(opt_cls, group: dict, shapes, p0s, grads_per_param, **kw) -> list[torch.Tensor]:
    ps = [torch.nn.Parameter(p.clone()) for p in p0s]
    opt = opt_cls([{**group, "params": ps}], **kw)
    for step in range(len(grads_per_param[0])):
        for p, gs in zip(ps, grads_per_param, strict=True):
            p.grad = gs[step].clone()
        opt.step()
    return [p.detach() for p in ps]


@pytest.mark.parametrize("refresh", [200, 4])
def test_lowrank_stage_equals_galore_torch(refresh: int) -> None:
    galore = pytest.importorskip("galore_torch")
    shapes = [(64, 48), (48, 64)]
    p0s = [torch.randn(s) for s in shapes]
    grads = [_grads(s, 10, seed=i) for i, s in enumerate(shapes)]
    group = {"rank": 8, "update_proj_gap": refresh, "scale": 0.25, "proj_type": "std"}
    ref = _ref_params(galore.GaLoreAdamW, group, shapes, p0s, grads, lr=0.01, eps=1e-6)
    for p0, gs, want in zip(p0s, grads, ref, strict=True):
        stage = LowRank([Adam(eps=1e-6, style="hf", fold_lr=True)], 8, refresh=refresh, scale=0.25)
        got, _, _ = _run(stage, p0, gs, 0.01)
        assert ((got - want).norm() / want.norm()).item() < 1e-6


@pytest.mark.parametrize(
    ("rank", "granularity", "alpha", "front"),
    [(8, "channel", 1.0, False), (1, "tensor", 128.0, True), (1, "tensor", 128.0, False)],
)
def test_lowrank_stage_equals_apollo_torch(
    rank: int, granularity: str, alpha: float, front: bool
) -> None:
    apollo = pytest.importorskip("apollo_torch")
    shapes = [(64, 48), (48, 64)]
    p0s = [torch.randn(s) for s in shapes]
    grads = [_grads(s, 10, seed=10 + i) for i, s in enumerate(shapes)]
    group = {"rank": rank, "proj": "random", "scale_type": granularity, "scale": alpha}
    group |= {"update_proj_gap": 4, "proj_type": "std"}
    ref = _ref_params(
        apollo.APOLLOAdamW, group, shapes, p0s, grads, lr=0.01, eps=1e-6, scale_front=front
    )
    for idx, (p0, gs, want) in enumerate(zip(p0s, grads, ref, strict=True), start=1):
        stage = LowRank(
            [Adam(eps=1e-6, style="hf", fold_lr=True)],
            rank,
            basis="gaussian",
            refresh=4,
            scale=math.sqrt(alpha),
            output=granularity,  # type: ignore[arg-type]
            limiter=True,
            scale_front=front,
        )
        got, _, _ = _run(stage, p0, gs, 0.01, seed=idx)
        assert ((got - want).norm() / want.norm()).item() < 1e-6


def test_apollo_tensor_scaling_without_limiter_is_collinear_with_gradient() -> None:
    stage = LowRank([Adam(eps=1e-6, style="hf")], 1, basis="gaussian", output="tensor", scale=3.0)
    g = torch.randn(48, 64)
    state = stage.init_at(torch.zeros(48, 64), 7)
    out = stage.update(g, state, torch.zeros(48, 64), 1)
    ratio = out / g
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-5)


def test_frugal_full_rank_complement_is_zero() -> None:
    shape = (40, 24)
    g = torch.randn(shape)
    full = LowRank([Adam()], 24, complement="sign")
    drop = LowRank([Adam()], 24, complement="drop")
    p = torch.zeros(shape)
    out_sign = full.update(g, full.init(p), p, 1)
    out_drop = drop.update(g, drop.init(p), p, 1)
    residual = g - project_back(
        project(g, svd_projector(g, 24, "right"), "right"), svd_projector(g, 24, "right"), "right"
    )
    assert residual.abs().max().item() < 1e-4
    # sign() of float round-off is +-1, so compare where the residual is not pure noise
    assert torch.allclose(out_sign - out_drop, torch.sign(residual))


def test_frugal_sign_complement_is_orthogonal_residual_sign() -> None:
    shape = (40, 24)
    g = torch.randn(shape)
    stage = LowRank([Adam()], 6, complement="sign", complement_scale=0.5)
    drop = LowRank([Adam()], 6)
    p = torch.zeros(shape)
    out = stage.update(g, stage.init(p), p, 1)
    base_out = drop.update(g, drop.init(p), p, 1)
    proj = svd_projector(g, 6, "right")
    residual = g - project_back(project(g, proj, "right"), proj, "right")
    assert torch.allclose(residual @ proj.t(), torch.zeros(40, 6), atol=1e-4)
    assert torch.allclose(out - base_out, 0.5 * torch.sign(residual), atol=1e-5)


def test_frugal_reset_on_refresh_restarts_inner_state() -> None:
    shape, T = (32, 20), 3
    grads = _grads(shape, T + 1, seed=5)
    long = LowRank([Adam()], 4, refresh=T, reset_on_refresh=True, complement="sign")
    _, state, outs = _run(long, torch.zeros(shape), grads, 0.01)
    fresh = LowRank([Adam()], 4, refresh=T, reset_on_refresh=True, complement="sign")
    _, _, fresh_outs = _run(fresh, torch.zeros(shape), grads[T:], 0.01)
    assert torch.allclose(outs[T], fresh_outs[0], atol=1e-6)
    keep = LowRank([Adam()], 4, refresh=T, complement="sign")
    _, _, keep_outs = _run(keep, torch.zeros(shape), grads, 0.01)
    assert not torch.allclose(keep_outs[T], fresh_outs[0], atol=1e-3)


@pytest.mark.parametrize("shape", [(64, 48), (48, 64), (128, 256)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_bytes_equal_init_bytes(shape: tuple[int, int], dtype: torch.dtype) -> None:
    p = torch.zeros(shape, dtype=dtype)
    stages = [
        LowRank([Adam()], 8),
        LowRank([Adam()], 0.5, basis="gaussian", output="channel", limiter=True),
        LowRank(
            [Adam(codec=make_codec(8), codec_v=make_codec(8, signed=False))],
            32,
            projector_codec=MinMaxCodec(4, 256),
        ),
    ]
    for stage in stages:
        state = stage.init(p)
        assert stage.state_bytes(shape, dtype) == _bytes(state)
        out = stage.update(torch.randn(shape), state, p, 1)
        assert out.shape == shape and torch.isfinite(out).all()
        assert stage.state_bytes(shape, dtype) == _bytes(state)


def test_int4_projector_is_close_to_svd_projector() -> None:
    shape = (128, 256)
    g = torch.randn(shape)
    stage = LowRank([Adam()], 16, projector_codec=MinMaxCodec(4, 256))
    state = stage.init(torch.zeros(shape))
    stage.update(g, state, torch.zeros(shape), 1)
    assert state["P.q"].dtype == torch.uint8 and state["P.q"].max().item() <= 15
    exact = svd_projector(g, 16, "left")
    deq = stage._read_projector(state, shape)
    assert (deq - exact).abs().max().item() <= state["P.scale"].max().item() / 2 + 1e-6


def test_zero_gradient_gives_finite_zero_update() -> None:
    for stage in [
        LowRank([Adam()], 4),
        LowRank([Adam()], 4, basis="gaussian", output="channel", limiter=True, complement="drop"),
    ]:
        p = torch.zeros(24, 16)
        state = stage.init(p)
        for t in (1, 2):
            out = stage.update(torch.zeros(24, 16), state, p, t)
            assert torch.isfinite(out).all() and out.abs().max().item() == 0.0


def test_adaptive_refresh_doubles_interval_for_a_stable_subspace() -> None:
    """Q-GaLore: the same gradient every step -> cos = 1 at every refresh; once the FIFO of 5
    is full, T doubles at each later refresh (1 -> 2 -> 4 -> 8)."""
    shape = (24, 16)
    g = torch.randn(shape)
    stage = LowRank([Adam()], 4, refresh=1, adaptive_refresh=True)
    p = torch.zeros(shape)
    state = stage.init(p)
    intervals = []
    for t in range(1, 17):
        stage.update(g, state, p, t)
        intervals.append(int(state["interval"]))
    # refreshes at k = 0..5 (T = 1): pushes at k = 1..5, full at k = 5 -> T = 2;
    # k = 6 -> T = 4; k = 8 -> T = 8; k = 16 is the next one
    assert intervals[:5] == [1, 1, 1, 1, 1]
    assert intervals[5] == 2 and intervals[6] == 4 and intervals[8] == 8
    assert intervals[-1] == 8
    assert torch.allclose(state["cos"], torch.ones(5), atol=1e-5)
    assert stage.state_bytes(shape, torch.float32) == _bytes(state)


def test_adaptive_refresh_keeps_interval_for_changing_subspaces() -> None:
    shape = (24, 16)
    stage = LowRank([Adam()], 4, refresh=1, adaptive_refresh=True)
    p = torch.zeros(shape)
    state = stage.init(p)
    for t, g in enumerate(_grads(shape, 12, seed=9), start=1):
        stage.update(g, state, p, t)
    assert int(state["interval"]) == 1 and int(state["cos_n"]) == 11
    assert state["cos"].abs().mean().item() < 0.4
    with pytest.raises(ValueError, match="adaptive_refresh"):
        LowRank([Adam()], 4, adaptive_refresh=True, reset_on_refresh=True)
