"""The trainer on the tiny workloads: determinism, learning, divergence, callbacks, metrics."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import optim_core
from core.workloads import get_workload, named_shapes
from workers.data import load_data
from workers.model import build_model
from workers.train import Callbacks, MetricPoint, TrainConfig, lr_factor, run_workload, train

NO_CACHE = Path("/nonexistent-cache")  # synthetic-lm and digits-mlp need no files


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # 2 shared cores: one thread per test process avoids oversubscription (and is deterministic).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(  # type: ignore[no-untyped-def]
    recipe: str = "adamw",
    steps: int = 30,
    seed: int = 0,
    lr: float | None = 0.01,
    device: str = "cpu",
    **kw,
):
    return run_workload("synthetic-lm", recipe, steps, seed, lr, device, cache_dir=NO_CACHE, **kw)


def test_same_seed_is_bitwise_identical_and_seeds_differ() -> None:
    a, b, c = _run(seed=3), _run(seed=3), _run(seed=4)
    losses = [[(p.train_loss, p.val_loss) for p in r.curve] for r in (a, b, c)]
    assert losses[0] == losses[1]  # exact float equality
    assert a.final_val_loss == b.final_val_loss
    assert losses[0] != losses[2]


@pytest.mark.parametrize(("recipe", "lr"), [("adamw", 0.01), ("sinkgd", None)])
def test_learns_synthetic_lm_well_below_uniform(recipe: str, lr: float | None) -> None:
    result = _run(recipe, steps=100, lr=lr)
    assert result.status == "succeeded" and result.steps == 100 and result.stopped_step is None
    assert result.final_val_loss is not None
    assert result.final_val_loss < 0.5 * math.log(256)
    first = result.curve[0].train_loss
    assert first is not None and first > result.final_val_loss + 1.0  # it learned during the run
    assert result.steps_to_target is not None and result.steps_to_target % 25 == 0


def test_huge_lr_ends_diverged_with_step() -> None:
    result = _run(steps=50, lr=1e3)
    assert result.status == "diverged"
    assert result.stopped_step is not None and 1 <= result.stopped_step <= 50
    assert result.steps == result.stopped_step and result.final_val_loss is None
    assert all(p.step < result.stopped_step for p in result.curve)


def test_cancel_callback_ends_cancelled() -> None:
    polls: list[int] = []

    def should_cancel() -> bool:
        polls.append(1)
        return len(polls) >= 2

    result = _run(steps=100, callbacks=Callbacks(should_cancel=should_cancel))
    assert result.status == "cancelled"
    assert result.stopped_step == 20 and result.steps == 20  # polled at each curve point (10)
    assert len(result.curve) == 2


def test_prune_on_eval_and_step_callbacks() -> None:
    seen: list[MetricPoint] = []
    evals: list[MetricPoint] = []

    def on_eval(point: MetricPoint) -> str:
        evals.append(point)
        return "prune" if point.step >= 50 else "continue"

    result = _run(steps=100, callbacks=Callbacks(on_step=seen.append, on_eval=on_eval))
    assert result.status == "pruned" and result.stopped_step == 50
    assert [p.step for p in evals] == [25, 50]
    assert all(p.val_loss is not None for p in evals)
    assert [p.step for p in seen] == [10, 20, 25, 30, 40, 50]
    assert [p.step for p in seen] == [p.step for p in result.curve]
    assert result.final_val_loss == evals[-1].val_loss


def test_metrics_and_measured_state_bytes() -> None:
    spec = get_workload("synthetic-lm")
    for preset in ("adamw", "sinkgd"):
        result = _run(preset, steps=10, lr=None)
        recipe = optim_core.presets.get(preset)
        assert result.state_bytes == optim_core.state_bytes(recipe, named_shapes(spec))
        assert result.n_params == spec.n_params
        assert result.state_bytes_per_param == pytest.approx(result.state_bytes / spec.n_params)
    assert result.state_bytes > 0 and result.tokens_per_s > 0 and result.wall_s > 0
    assert result.peak_mem_bytes > 10 * 2**20
    assert result.env["torch"] == torch.__version__ and result.env["threads"] == 1
    last = result.curve[-1]
    assert last.step == 10 and last.tokens == 10 * spec.tokens_per_step and last.val_loss
    assert result.to_dict()["curve"][-1]["step"] == 10


def test_lr_schedule_is_galore_warmup_cosine() -> None:
    assert lr_factor(0, 100) == 0.0 and lr_factor(5, 100) == pytest.approx(0.5)
    assert lr_factor(10, 100) == pytest.approx(1.0)
    assert lr_factor(100, 100) == pytest.approx(0.1)
    assert lr_factor(55, 100) == pytest.approx(0.55)  # halfway through the cosine
    result = _run(steps=40, lr=0.01)
    steps = [p.step for p in result.curve]
    assert steps == [10, 20, 25, 30, 40]
    # the point's lr is the lr its step used: 0-based step index = step - 1
    assert [p.lr for p in result.curve] == pytest.approx(
        [0.01 * lr_factor(s - 1, 40) for s in steps]
    )


def test_train_directly_with_grad_clip_on_digits() -> None:
    spec = get_workload("digits-mlp")
    data = load_data(spec, 0, NO_CACHE)
    model = build_model(spec.model, seed=0)
    opt = optim_core.build(optim_core.presets.get("adamw"), model, lr=0.01)
    cfg = TrainConfig(steps=100, eval_every=50, grad_clip=0.5, target_loss=spec.target_loss)
    result = train(model, opt, data, cfg)
    assert result.status == "succeeded"
    assert result.final_val_loss is not None and result.final_val_loss < 0.6  # ln(10) = 2.30
    assert result.tokens_per_s > 0 and len([p for p in result.curve if p.val_loss]) == 2


class _SvdLikeSGD(torch.optim.SGD):
    """Raises like an SVD-based optimizer does on a non-finite gradient (or always)."""

    def __init__(self, params, always: bool = False) -> None:  # type: ignore[no-untyped-def]
        super().__init__(params, lr=0.01)
        self.always = always

    def step(self, closure=None):  # type: ignore[no-untyped-def, override]
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if self.always or any(not torch.isfinite(g).all() for g in grads):
            raise torch.linalg.LinAlgError("linalg.svd: the algorithm failed to converge")
        return super().step(closure)


def test_optimizer_error_on_nonfinite_grads_is_divergence() -> None:
    spec = get_workload("synthetic-lm")
    data = load_data(spec, 0, NO_CACHE)
    model = build_model(spec.model, seed=0)
    with torch.no_grad():
        dict(model.named_parameters())["lm_head.weight"][0, 0] = float("inf")
    result = train(model, _SvdLikeSGD(model.parameters()), data, TrainConfig(steps=20))
    assert result.status == "diverged" and result.stopped_step == 1
    healthy = build_model(spec.model, seed=0)
    with pytest.raises(torch.linalg.LinAlgError):  # a real bug is not hidden as divergence
        train(healthy, _SvdLikeSGD(healthy.parameters(), always=True), data, TrainConfig(steps=5))


@pytest.mark.gpu
def test_cuda_bf16_run_measures_gpu_memory() -> None:
    result = _run(steps=30, lr=0.01, device="cuda")
    assert result.status == "succeeded" and result.env["device"].startswith("cuda")
    assert result.final_val_loss is not None and result.final_val_loss < math.log(256)
    assert 0 < result.peak_mem_bytes < 2**30  # CUDA max_memory_allocated, not the host RSS


class _PoisonLastStepSGD(torch.optim.SGD):
    """Plain SGD whose ``poison_at``-th step leaves a NaN weight (the train loss of that step
    was still finite: only the held-out evaluation can see it)."""

    def __init__(self, params, poison_at: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__(params, lr=0.01)
        self.poison_at, self.calls = poison_at, 0

    def step(self, closure=None):  # type: ignore[no-untyped-def, override]
        out = super().step(closure)
        self.calls += 1
        if self.calls == self.poison_at:
            with torch.no_grad():
                self.param_groups[0]["params"][-1].view(-1)[0] = float("nan")  # lm_head
        return out


def test_nonfinite_val_loss_after_last_step_is_divergence() -> None:
    spec = get_workload("synthetic-lm")
    data = load_data(spec, 0, NO_CACHE)
    model = build_model(spec.model, seed=0)
    opt = _PoisonLastStepSGD(model.parameters(), poison_at=20)
    result = train(model, opt, data, TrainConfig(steps=20, eval_every=10))
    assert result.status == "diverged" and result.stopped_step == 20 and result.steps == 20
    assert result.final_val_loss is None
    assert [p.step for p in result.curve] == [10]  # the poisoned point is not recorded
    assert result.curve[0].val_loss is not None and math.isfinite(result.curve[0].val_loss)


class _NanThenBroken(torch.nn.Module):
    """Wraps a model: the 2nd forward returns NaN logits, the 3rd raises a plain bug."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("shape bug in forward")
        out = self.inner(x)
        return out * float("nan") if self.calls == 2 else out


def test_forward_error_after_a_nan_step_is_raised_not_divergence() -> None:
    spec = get_workload("synthetic-lm")
    data = load_data(spec, 0, NO_CACHE)
    model = _NanThenBroken(build_model(spec.model, seed=0))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(RuntimeError, match="shape bug"):  # the stale NaN loss is not blamed
        train(model, opt, data, TrainConfig(steps=20))
