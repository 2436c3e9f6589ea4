"""A trial's run carries its analytical memory estimate from creation (the pruner's classes)."""

from __future__ import annotations

from pathlib import Path


def test_estimate_is_the_recipe_state_bytes_on_the_workload_model(data_dir: Path) -> None:
    from core.models import Run
    from core.workloads import get_workload
    from records.recipes import resolve_recipe, state_bytes_on
    from search.trial_runs import estimate_memory

    _, canonical, _ = resolve_recipe("adamw")
    run = Run(workload="synthetic-lm", steps=5, seed=0, lr=0.01)
    estimate_memory(run, canonical)
    spec = get_workload("synthetic-lm")
    assert run.state_bytes == state_bytes_on(canonical, spec) > 0
    assert run.n_params == spec.n_params
    assert run.state_bytes_per_param == run.state_bytes / spec.n_params


def test_a_recipe_that_does_not_fit_leaves_the_estimate_empty(data_dir: Path) -> None:
    from core.models import Run
    from search.trial_runs import estimate_memory

    run = Run(workload="synthetic-lm", steps=5, seed=0, lr=0.01)
    estimate_memory(run, {"lr": 0.01, "design": {"norms": ["row"], "rank": 100000}})
    assert run.state_bytes is None and run.n_params is None
