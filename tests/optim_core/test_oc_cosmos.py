"""COSMOS (docs/references.md#cosmos): the stage against a literal re-implementation of the formulas,
the whole preset against a transcription of ``COSMOS_optim.py`` (both branches), state
shapes/bytes, the tracked eigenbasis, the update RMS and the reference's Adam branch."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from torch import Tensor

import optim_core
from optim_core import presets, testing
from optim_core.cosmos import Cosmos, CosmosAdam, cosmos_newton_schulz, matmul_bf16_via_fp32
from optim_core.recipe import CosmosSpec, Pipeline, Recipe, Route

NAME = "layers.0.mlp.up.weight"


def _recipe(lr: float = 0.01, wd: float = 0.1, **spec: object) -> Recipe:
    route = Route(labels=["matrix"], stages=[CosmosSpec.model_validate(spec)])
    return Recipe(lr=lr, weight_decay=wd, pipeline=Pipeline(routes=[route]))


def _ns_literal(g: Tensor, dtype: torch.dtype, steps: int = 5, eps: float = 1e-7) -> Tensor:
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = g.to(dtype)
    x = x / (x.norm() + eps)
    if g.size(0) > g.size(1):
        x = x.T
    for _ in range(steps):
        big_a = x @ x.T
        big_b = big_a @ x
        x = a * x + b * big_b + c * big_a @ big_b
    if g.size(0) > g.size(1):
        x = x.T
    return x.float()


def _track_basis(
    g: Tensor, u: Tensor, s: Tensor, t: int, beta2: float, r: int
) -> tuple[Tensor, Tensor]:
    """The tracked eigenbasis U (SVD at step 1, one QR power step after) and the projected
    second moment S rotated into it, literally."""
    if t == 1:
        u = torch.linalg.svd(g.T @ g, full_matrices=False)[0][:, :r]
        return u, (1 - beta2) * (g @ u).T @ (g @ u)
    p_new = beta2 * u @ s + (1 - beta2) * g.T @ (g @ u)
    u_new = torch.linalg.qr(p_new, mode="reduced").Q
    rot = u.T @ u_new
    return u_new, beta2 * rot.T @ s @ rot + (1 - beta2) * (g @ u_new).T @ (g @ u_new)


def _direction(
    g_hat: Tensor,
    u: Tensor,
    v: Tensor,
    bc2: float,
    *,
    eps: float,
    gamma: float,
    ns_dtype: torch.dtype,
) -> Tensor:
    """Adam in the basis U plus ``gamma`` x the orthogonalized, rescaled complement."""
    m_rows, n_cols = g_hat.shape
    a = ((g_hat @ u) / (v.sqrt() / math.sqrt(bc2) + eps)) @ u.T
    b = _ns_literal(g_hat - g_hat @ u @ u.T, ns_dtype)
    scale = math.sqrt(m_rows * n_cols)
    b = scale * b / (b.norm() + eps)
    return a + gamma * b


def _reference(
    w0: Tensor,
    grads: list[Tensor],
    *,
    lr: float,
    wd: float,
    beta1: float = 0.95,
    beta2: float = 0.95,
    eps: float = 1e-8,
    rank: int = 64,
    gamma: float = 0.2,
    ratio: float = 0.2,
    nesterov: bool = True,
    ns_dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The COSMOS update (docs/references.md#cosmos), written out literally (one matrix)."""
    w = w0.clone()
    m_rows, n_cols = w.shape
    r = min(rank, m_rows, n_cols)
    mom = torch.zeros_like(w)
    v = torch.zeros(m_rows, r)
    u = torch.zeros(n_cols, r)
    s = torch.zeros(r, r)
    for t, g in enumerate(grads, start=1):
        mom = beta1 * mom + g
        c1 = (1 - beta1**t) / (1 - beta1)
        bc2 = 1 - beta2**t
        u, s = _track_basis(g, u, s, t, beta2, r)
        v = beta2 * v + (1 - beta2) * (g @ u) ** 2
        g_hat = (g + beta1 * mom) / (1 + beta1 * c1) if nesterov else mom / c1
        d = _direction(g_hat, u, v, bc2, eps=eps, gamma=gamma, ns_dtype=ns_dtype)
        scale = math.sqrt(m_rows * n_cols)
        w = w * (1 - lr * wd)
        w = w - lr * ratio * scale * d / (d.norm() + eps)
    return w, {"M": mom, "U": u, "S": s, "V": v}


def _reference_adam(
    w0: Tensor,
    grads: list[Tensor],
    *,
    lr: float,
    wd: float,
    beta1: float = 0.95,
    beta2: float = 0.95,
    eps: float = 1e-8,
) -> Tensor:
    """The ``else`` branch of ``COSMOS_optim.cosmos``, literally (0.1 gradient weight and a
    0.9-based bias correction whatever β1 is)."""
    w = w0.clone()
    exp_avg, exp_avg_sq = torch.zeros_like(w), torch.zeros_like(w)
    for step, g in enumerate(grads, start=1):
        bias_correction1 = 1 - 0.9**step
        bias_correction2 = 1 - beta2**step
        exp_avg.mul_(beta1).add_(g, alpha=0.1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
        w.mul_(1 - lr * wd)
        w.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
    return w


def _run(recipe: Recipe, w0: Tensor, grads: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    p = torch.nn.Parameter(w0.clone())
    opt = optim_core.build(recipe, {NAME: p})
    for g in grads:
        p.grad = g.clone()
        opt.step()
    state = {k.split(".")[-1]: v for k, v in opt.state[p].items() if k != "step"}
    return p.detach(), state


def _grads(shape: tuple[int, int], steps: int, seed: int = 0) -> tuple[Tensor, list[Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(shape, generator=gen)
    return w0, [torch.randn(shape, generator=gen) for _ in range(steps)]


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(
    ("shape", "rank", "nesterov"),
    [((24, 16), 6, True), ((16, 24), 6, True), ((24, 16), 6, False), ((30, 20), 8, True)],
)
def test_matches_literal_formulas_fp32_newton_schulz(
    shape: tuple[int, int], rank: int, nesterov: bool
) -> None:
    w0, grads = _grads(shape, 4)
    kw = {"rank": rank, "nesterov": nesterov}
    got, state = _run(_recipe(ns_dtype="fp32", **kw), w0, grads)
    want, ref_state = _reference(w0, grads, lr=0.01, wd=0.1, **kw)  # type: ignore[arg-type]
    assert _rel(got, want) < 1e-6
    assert not torch.equal(got, w0 * (1 - 0.01 * 0.1) ** 4)  # the update did something
    for key in ("M", "S", "V"):
        assert _rel(state[key], ref_state[key]) < 1e-5, key
    # U is compared as a subspace (QR/SVD column signs are routine-dependent)
    assert _rel(state["U"] @ state["U"].T, ref_state["U"] @ ref_state["U"].T) < 1e-5


def test_bf16_newton_schulz_close_to_literal_formulas() -> None:
    w0, grads = _grads((24, 16), 3, seed=1)
    got, _ = _run(_recipe(rank=6), w0, grads)
    want, _ = _reference(w0, grads, lr=0.01, wd=0.1, rank=6, ns_dtype=torch.bfloat16)
    assert _rel(got - w0, want - w0) < 1e-3


def test_cosmos_newton_schulz_is_near_orthogonal() -> None:
    x = torch.randn(32, 20, generator=torch.Generator().manual_seed(3))
    sv = torch.linalg.svdvals(cosmos_newton_schulz(x, dtype=torch.float32))
    assert sv.min() > 0.6 and sv.max() < 1.2


def test_bf16_matmul_via_fp32_rounds_the_exact_product_once() -> None:
    """bf16 inputs are exact in fp32 and so are their products: the fp32 GEMM result is the
    exact dot product up to fp32 summation error, rounded once to bf16 (as a bf16 GEMM with
    fp32 accumulation), so it is within half a bf16 ulp (plus fp32 noise) of the fp64 product."""
    gen = torch.Generator().manual_seed(8)
    a = torch.randn(48, 96, generator=gen).bfloat16()
    b = torch.randn(96, 40, generator=gen).bfloat16()
    got = matmul_bf16_via_fp32(a, b)
    assert got.dtype == torch.bfloat16
    exact = a.double() @ b.double()
    ulp = torch.finfo(torch.bfloat16).eps * exact.abs().clamp(min=1e-30)  # 2^-7 relative
    err = (got.double() - exact).abs()
    assert torch.all(err <= 0.5 * ulp * 1.01 + 1e-6)
    assert float(err.max()) > 0  # it really rounded to bf16
    native = (a @ b).double()  # torch's bf16 kernel: the same up to summation order
    assert torch.allclose(got.double(), native, rtol=2**-7, atol=1e-5)


def test_state_shapes_and_bytes() -> None:
    recipe = _recipe(rank=6)
    w0, grads = _grads((24, 16), 2)
    _, state = _run(recipe, w0, grads)
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "M": (24, 16),
        "U": (16, 6),
        "S": (6, 6),
        "V": (24, 6),
    }
    assert all(v.dtype == torch.float32 for v in state.values())
    want = 4 * (24 * 16 + 16 * 6 + 6 * 6 + 24 * 6)
    assert optim_core.state_bytes(recipe, {NAME: (24, 16)}) == want
    assert Cosmos(rank=64).state_bytes((8, 3, 5), torch.bfloat16) == 4 * (120 + 15 * 8 + 64 + 64)


def test_preset_state_bytes_on_llama_shapes() -> None:
    """Every matrix with <= 10000 rows (embedding and head too): M + U + S + V floats; vectors
    and the 32000-row embedding/head: the Adam branch's 2 floats/param."""
    shapes = testing.llama_shapes(vocab=32000)
    shapes["embed_small.weight"] = (500, 64)  # an embedding (label) with few rows
    want = 0
    for shape in shapes.values():
        if len(shape) == 2 and shape[0] <= 10000:
            m, n = shape
            r = min(64, m, n)
            want += 4 * (m * n + n * r + r * r + m * r)
        else:
            want += 8 * math.prod(shape)
    assert optim_core.state_bytes(presets.get("cosmos"), shapes) == want


def test_first_step_basis_is_top_right_singular_subspace() -> None:
    beta2 = 0.95
    _, grads = _grads((24, 16), 1, seed=2)
    g = grads[0]
    _, state = _run(_recipe(rank=5, beta2=beta2), torch.zeros(24, 16), grads)
    u = state["U"]
    vt = torch.linalg.svd(g, full_matrices=False)[2][:5]
    assert torch.allclose(u.T @ u, torch.eye(5), atol=1e-5)
    assert torch.allclose(u @ u.T, vt.T @ vt, atol=1e-4)
    assert torch.allclose(state["S"], (1 - beta2) * (g @ u).T @ (g @ u), atol=1e-5)


def test_basis_tracks_a_changed_gradient_subspace() -> None:
    """Every step rotates U (orthonormal); repeated low-rank gradients pull it to their span."""
    gen = torch.Generator().manual_seed(4)
    left = torch.randn(20, 3, generator=gen)
    first, second = (left @ torch.randn(3, 16, generator=gen) for _ in range(2))
    grads = [first] + [second] * 12
    p = torch.nn.Parameter(torch.zeros(20, 16))
    opt = optim_core.build(_recipe(rank=3, beta2=0.5), {NAME: p})
    key = "0.cosmos.U"
    overlaps = []
    target = torch.linalg.svd(second, full_matrices=False)[2][:3]
    for g in grads:
        p.grad = g.clone()
        opt.step()
        u = opt.state[p][key]
        assert torch.allclose(u.T @ u, torch.eye(3), atol=1e-5)
        overlaps.append(float(torch.linalg.matrix_norm(target @ u) ** 2 / 3))
    assert overlaps[0] < 0.9  # step 1 basis: the first gradient's subspace
    assert overlaps[-1] > 0.999  # converged to the new subspace
    assert overlaps[-1] > overlaps[1]


def test_update_rms_is_lr_times_ratio() -> None:
    w0, grads = _grads((24, 16), 3, seed=5)
    p = torch.nn.Parameter(w0.clone())
    opt = optim_core.build(_recipe(lr=0.05, wd=0.0, ratio=0.3), {NAME: p})
    for g in grads:
        before = p.detach().clone()
        p.grad = g
        opt.step()
        rms = float((p.detach() - before).square().mean().sqrt())
        assert rms == pytest.approx(0.05 * 0.3, rel=1e-4)


def test_large_matrices_take_the_reference_adam_branch_and_conv_weights_flatten() -> None:
    recipe = _recipe(rank=4, max_rows=30)
    params = {
        NAME: torch.nn.Parameter(torch.randn(40, 8)),
        "layers.0.conv.weight": torch.nn.Parameter(torch.randn(8, 3, 5)),
    }
    opt = optim_core.build(recipe, params)
    assert isinstance(opt.stages_of(params[NAME])[0], CosmosAdam)
    assert isinstance(opt.stages_of(params["layers.0.conv.weight"])[0], Cosmos)
    for p in params.values():
        p.grad = torch.randn_like(p)
    opt.step()
    opt.step()
    assert all(torch.isfinite(p).all() for p in params.values())
    assert optim_core.measure_state_bytes(opt) == optim_core.state_bytes(
        recipe, {n: tuple(p.shape) for n, p in params.items()}
    )


def test_spec_is_strict_and_vectors_take_the_adam_branch() -> None:
    with pytest.raises(pydantic.ValidationError):
        CosmosSpec.model_validate({"rank": 0})
    with pytest.raises(pydantic.ValidationError):
        CosmosSpec.model_validate({"lr_ratio": 0.2})
    recipe = Recipe(pipeline=Pipeline(routes=[Route(stages=[CosmosSpec()])]), lr=0.01)
    norm = torch.nn.Parameter(torch.ones(4))
    opt = optim_core.build(recipe, {"norm.weight": norm})
    assert isinstance(opt.stages_of(norm)[0], CosmosAdam)


def test_adam_branch_matches_the_reference_gradient_weighting() -> None:
    """m ← β1·m + 0.1·g and bc1 = 1 − 0.9^t (not torch Adam's 1 − β1 and 1 − β1^t)."""
    w0, grads = _grads((64,), 10, seed=6)  # type: ignore[arg-type]
    recipe = Recipe(
        pipeline=Pipeline(routes=[Route(stages=[CosmosSpec()])]), lr=0.01, weight_decay=0.1
    )
    got, _ = _run(recipe, w0, grads)
    want = _reference_adam(w0, grads, lr=0.01, wd=0.1)
    assert _rel(got - w0, want - w0) < 1e-6


def _fp32_ns(recipe: Recipe) -> Recipe:
    data = recipe.model_dump(by_alias=True)
    for route in data["pipeline"]["routes"]:
        for stage in route["stages"]:
            if stage["type"] == "cosmos":
                stage["ns_dtype"] = "fp32"
    return Recipe.model_validate(data)


def test_preset_matches_the_reference_optimizer_with_small_vocabulary() -> None:
    """COSMOS_optim.py runs COSMOS on every 2-D parameter with <= 10000 rows (a 65-token
    embedding and head included) and its Adam branch on the rest (fp32 Newton–Schulz here)."""
    gen = torch.Generator().manual_seed(7)
    shapes = {
        "embed.weight": (65, 16),
        "layers.0.mlp.up.weight": (24, 16),
        "layers.0.attn_norm.weight": (16,),
        "lm_head.weight": (65, 16),
    }
    w0 = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    grads = {n: [torch.randn(s, generator=gen) for _ in range(5)] for n, s in shapes.items()}
    params = {n: torch.nn.Parameter(w.clone()) for n, w in w0.items()}
    opt = optim_core.build(_fp32_ns(presets.get("cosmos", rank=8)), params)
    for t in range(5):
        for n, p in params.items():
            p.grad = grads[n][t].clone()
        opt.step()
    for n, p in params.items():
        if len(shapes[n]) == 2:
            want, _ = _reference(w0[n], grads[n], lr=2e-3, wd=0.1, rank=8)
            assert isinstance(opt.stages_of(p)[0], Cosmos), n
        else:
            want = _reference_adam(w0[n], grads[n], lr=2e-3, wd=0.1)
        # on the update (not the weights): SVD/QR rounding gives ~2e-5 here
        assert _rel(p.detach() - w0[n], want - w0[n]) < 1e-4, n


def test_preset_defaults_follow_the_paper_readme() -> None:
    recipe = presets.get("cosmos")
    assert (recipe.lr, recipe.weight_decay) == (2e-3, 0.1)
    (route,) = recipe.to_pipeline().routes
    spec = route.stages[0]
    assert isinstance(spec, CosmosSpec)
    assert set(route.labels) == {"matrix", "embedding", "head", "vector"}
    assert (spec.beta1, spec.beta2, spec.rank, spec.gamma, spec.ratio) == (
        0.95,
        0.95,
        64,
        0.2,
        0.2,
    )
    assert spec.nesterov and spec.max_rows == 10000
