"""Pure tensor primitives: normalizations, orthogonalization, whitening, momentum, Adam, decay
(property tests from docs/references.md#equivalence-tests where no reference package exists)."""

from __future__ import annotations

import math

import torch

import optim_core
from optim_core import adaptive, momentum, normalize, orthogonalize


def _g(m: int = 24, n: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed))


def test_row_and_col_give_unit_rms_slices() -> None:
    g = _g()
    r = normalize.row(g)
    c = normalize.col(g)
    torch.testing.assert_close(r.norm(dim=1), torch.full((24,), math.sqrt(40)))
    torch.testing.assert_close(c.norm(dim=0), torch.full((40,), math.sqrt(24)))


def test_frobenius_rms_and_sign() -> None:
    g = _g()
    assert abs(normalize.frobenius(g, target=3.0).norm().item() - 3.0) < 1e-5
    assert abs(normalize.rms(g).norm().item() - math.sqrt(g.numel())) < 1e-3
    s = normalize.sign(torch.tensor([-2.0, 0.0, 5.0]))
    assert s.tolist() == [-1.0, 0.0, 1.0]


def test_zero_update_stays_finite_in_every_norm() -> None:
    z = torch.zeros(8, 6)
    for fn in (normalize.row, normalize.col, normalize.rms, normalize.standardize):
        assert torch.equal(fn(z), z)
    assert torch.isfinite(normalize.frobenius(z)).all()
    assert torch.isfinite(normalize.sinkhorn(z)).all()


def test_standardize_rows_mean_zero_var_one() -> None:
    x = normalize.standardize(_g() * 3 + 1)
    torch.testing.assert_close(x.mean(dim=1), torch.zeros(24), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.var(dim=1, unbiased=False), torch.ones(24), atol=1e-4, rtol=0)


def test_sinkhorn_columns_exact_rows_converge() -> None:
    g = _g()
    x = normalize.sinkhorn(g, iters=5)
    torch.testing.assert_close(x.norm(dim=0), torch.full((40,), math.sqrt(24)))
    rows_1 = normalize.sinkhorn(g, iters=1).norm(dim=1)
    rows_20 = normalize.sinkhorn(g, iters=20).norm(dim=1)
    target = math.sqrt(40)
    assert (rows_20 - target).abs().max() < (rows_1 - target).abs().max()
    assert (rows_20 - target).abs().max() < 1e-3
    torch.testing.assert_close(normalize.sinkhorn(g, 1), normalize.col(normalize.row(g)))
    torch.testing.assert_close(normalize.sinkhorn(g, 5), normalize.sinkhorn_reference(g, 5))
    g[3] = 0.0  # an all-zero row stays zero and finite in the scale form
    torch.testing.assert_close(normalize.sinkhorn(g, 8), normalize.sinkhorn_reference(g, 8))


def test_newton_schulz_singular_values_in_band() -> None:
    for shape in ((32, 64), (64, 32)):
        o = orthogonalize.newton_schulz(_g(*shape), dtype=torch.float32)
        s = torch.linalg.svdvals(o.float())
        assert 0.6 < s.min().item() and s.max().item() < 1.25, s
        assert o.shape == shape


def test_newton_schulz_kj_and_torch_orders_agree_in_fp32() -> None:
    g = _g()
    a = orthogonalize.newton_schulz(g, op_order="torch_addmm", dtype=torch.float32)
    b = orthogonalize.newton_schulz(g, op_order="kj", dtype=torch.float32)
    assert ((a - b).norm() / a.norm()).item() < 1e-4  # same math in fp32; bf16 differs by rounding


def test_svd_orthogonalize_is_exact_polar_factor() -> None:
    o = orthogonalize.svd_orthogonalize(_g())
    torch.testing.assert_close(o @ o.T, torch.eye(24), atol=1e-5, rtol=0)


def test_exact_spectral_maps_propagate_nan_instead_of_raising() -> None:
    bad = _g()
    bad[0, 0] = float("inf")
    assert torch.isnan(orthogonalize.svd_orthogonalize(bad)).all()
    assert torch.isnan(orthogonalize.whiten(bad, method="eigh")).all()


def test_whitening_rows_orthogonal() -> None:
    g = normalize.standardize(_g(16, 64))
    for method, tol in (("eigh", 1e-4), ("ns", 5e-2)):
        d = orthogonalize.whiten(g, method=method, steps=30)  # type: ignore[arg-type]
        gram = d @ d.T
        c = gram.diagonal().mean()
        assert ((gram - c * torch.eye(16)).norm() / (c * 4)).item() < tol
    d = orthogonalize.whiten(g, rescale=True)
    assert abs(d.norm().item() - math.sqrt(d.numel())) < 1e-2
    tall = orthogonalize.whiten(_g(64, 16))
    torch.testing.assert_close(tall.T @ tall, torch.eye(16), atol=1e-4, rtol=0)


def test_shape_ratio_rules() -> None:
    assert orthogonalize.shape_ratio((128, 32), "original") == 2.0
    assert orthogonalize.shape_ratio((32, 128), "original") == 1.0
    assert abs(orthogonalize.shape_ratio((32, 100), "match_rms_adamw") - 2.0) < 1e-12


def test_momentum_forms() -> None:
    g, m0 = _g(seed=1), _g(seed=2)
    lerp = momentum.ema_lerp_(m0.clone(), g, 0.9)
    muladd = momentum.ema_mul_add_(m0.clone(), g, 0.9)
    torch.testing.assert_close(lerp, 0.9 * m0 + 0.1 * g)
    torch.testing.assert_close(muladd, lerp)
    hb = momentum.heavy_ball_(m0.clone(), g, 0.9, dampening=0.5)
    torch.testing.assert_close(hb, 0.9 * m0 + 0.5 * g)
    torch.testing.assert_close(momentum.nesterov_lerp(g, m0, 0.9), 0.1 * g + 0.9 * m0)
    torch.testing.assert_close(momentum.nesterov_add(g, m0, 0.9), g + 0.9 * m0)
    torch.testing.assert_close(momentum.lion_interp(m0, g, 0.8), 0.8 * m0 + 0.2 * g)


def test_ema_stage_init_first_copies_first_input() -> None:
    stage = momentum.Ema(beta=0.9, form="heavy_ball", init_first=True)
    p = torch.zeros(3, 4)
    state = stage.init(p)
    g = _g(3, 4)
    out = stage.update(g, state, p, 1)
    torch.testing.assert_close(out, g)
    out2 = stage.update(g, state, p, 2)
    torch.testing.assert_close(out2, 1.9 * g)


def test_hf_adam_equals_torch_adam_with_rescaled_eps() -> None:
    """HF ε placement ≡ torch placement with ε_torch = ε / sqrt(bc2) (docs/references.md#conventions)."""
    g = _g()
    m = g * 0.1
    v = g * g * 0.001
    t, b1, b2, eps = 3, 0.9, 0.999, 1e-3
    hf = adaptive.adam_direction(m, v, t, b2, eps, "hf") * adaptive.adam_step_factor(
        t, b1, b2, "hf"
    )
    eps_t = eps / math.sqrt(1 - b2**t)
    th = adaptive.adam_direction(m, v, t, b2, eps_t, "torch")
    th = th * adaptive.adam_step_factor(t, b1, b2, "torch")
    torch.testing.assert_close(hf, th)


def test_factored_second_moment_is_rank_one() -> None:
    g = _g()
    row = torch.zeros(24, 1)
    col = torch.zeros(1, 40)
    var = adaptive.factored_update_(row, col, g, 1.0, 1e-30)
    assert torch.linalg.matrix_rank(var).item() == 1
    torch.testing.assert_close(row.squeeze(1), (g * g).mean(dim=1))
    torch.testing.assert_close(col.squeeze(0), (g * g).mean(dim=0))


def _one_step(mode: str, wd: float = 0.1, lr: float = 0.5) -> torch.Tensor:
    recipe = optim_core.Recipe.model_validate(
        {
            "lr": lr,
            "weight_decay": wd,
            "pipeline": {"routes": [{"stages": [{"type": "sign"}], "wd_mode": mode}]},
        }
    )
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    p.grad = torch.tensor([0.5, 0.5])
    optim_core.build(recipe, [("w", p)]).step()
    return p.detach()


def test_weight_decay_modes() -> None:
    w, g, lr, wd = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5]), 0.5, 0.1
    torch.testing.assert_close(_one_step("decoupled_before"), w * (1 - lr * wd) - lr * g.sign())
    torch.testing.assert_close(_one_step("decoupled_after"), (w - lr * g.sign()) * (1 - lr * wd))
    torch.testing.assert_close(_one_step("coupled"), w - lr * (g + wd * w).sign())
