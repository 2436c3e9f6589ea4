"""Experiment specs: validation with field paths and caps, fan-out, reuse, idempotency keys."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import func, select


@pytest.fixture
def db(data_dir: Path) -> Path:
    from migrations.runner import upgrade

    upgrade()
    return data_dir


def _spec(**kw):  # type: ignore[no-untyped-def]
    from records.experiments import ExperimentCreate

    base = {"recipes": ["adamw", "sinkgd"], "workload": "synthetic-lm", "steps": 20}
    return ExperimentCreate.model_validate({**base, **kw})


def _locs(exc: ValidationError) -> list[tuple]:  # type: ignore[type-arg]
    return [tuple(e["loc"]) for e in exc.errors()]


def test_field_caps_name_the_field_and_the_cap(data_dir: Path) -> None:
    with pytest.raises(ValidationError) as err:
        _spec(seeds=list(range(11)))
    assert _locs(err.value) == [("seeds",)] and "max_seeds=10" in str(err.value)
    with pytest.raises(ValidationError) as err:
        _spec(steps=10**6)
    assert _locs(err.value) == [("steps",)] and "max_steps" in str(err.value)
    with pytest.raises(ValidationError) as err:
        _spec(lr_grid=[0.1 * (i + 1) for i in range(17)])
    assert _locs(err.value) == [("lr_grid",)] and "max_lr_grid=16" in str(err.value)
    with pytest.raises(ValidationError, match="not both"):
        _spec(lr=0.1, lr_grid=[0.1, 0.2])
    with pytest.raises(ValidationError) as err:
        _spec(lr=float("nan"))
    assert _locs(err.value) == [("lr",)]
    with pytest.raises(ValidationError) as err:
        _spec(bogus=1)
    assert _locs(err.value) == [("bogus",)]


def test_recipe_refs_accept_names_objects_and_bare_recipes() -> None:
    spec = _spec(recipes=["adamw", {"preset": "lion", "name": "L"}, {"lr": 0.1, "design": {}}])
    assert spec.recipes[0].preset == "adamw" and spec.recipes[1].name == "L"
    assert spec.recipes[2].recipe == {"lr": 0.1, "design": {}}
    with pytest.raises(ValidationError, match="exactly one"):
        _spec(recipes=[{"preset": "adamw", "recipe": {}}])


def test_plan_errors_carry_paths_and_valid_names(data_dir: Path) -> None:
    from records.experiments import SpecError, plan_experiment
    from records.recipes import UnknownNameError

    with pytest.raises(UnknownNameError) as err:
        plan_experiment(_spec(workload="nope"))
    assert err.value.errors[0]["loc"] == ("workload",) and "synthetic-lm" in err.value.valid
    with pytest.raises(UnknownNameError) as err:
        plan_experiment(_spec(recipes=["adamw", "adamw-typo"]))
    assert err.value.errors[0]["loc"] == ("recipes", 1, "preset") and "adamw" in str(err.value)
    with pytest.raises(SpecError) as serr:
        plan_experiment(_spec(recipes=[{"recipe": {"lr": "fast", "design": {}}}]))
    assert serr.value.errors[0]["loc"][:2] == ("recipes", 0)
    with pytest.raises(SpecError) as serr:
        plan_experiment(_spec(steps=6000))  # synthetic-lm allows 5000
    assert serr.value.errors[0]["loc"] == ("steps",) and "5000" in str(serr.value)


def test_total_runs_cap(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.config import get_settings
    from records.experiments import SpecError, plan_experiment

    monkeypatch.setenv("OPTFORGE_MAX_RUNS_PER_REQUEST", "7")
    get_settings.cache_clear()
    with pytest.raises(SpecError, match="max_runs_per_request=7"):
        plan_experiment(_spec(seeds=[0, 1], lr_grid=[0.01, 0.02]))  # 2 x 2 x 2 = 8
    assert len(plan_experiment(_spec(seeds=[0, 1, 2])).runs) == 6


def test_fan_out_reuse_and_idempotency(db: Path) -> None:
    from core.db import session_scope
    from core.models import Recipe, Run
    from records.experiments import IdempotencyConflictError, create_experiment

    spec = _spec(seeds=[0, 1], lr_grid=[0.01, 0.02])
    with session_scope() as s:
        exp, ids = create_experiment(s, spec, owner="me", idempotency_key="k1")
        exp_id = exp.id
    assert len(ids) == 8
    with session_scope() as s:
        runs = s.scalars(select(Run).where(Run.experiment_id == exp_id)).all()
        assert {(r.seed, r.lr) for r in runs} == {(s_, lr) for s_ in (0, 1) for lr in (0.01, 0.02)}
        assert all(r.status == "queued" and r.steps == 20 and r.queue == "cpu" for r in runs)
        assert s.scalar(select(func.count()).select_from(Recipe)) == 2
        done = runs[0]
        done.status, done.final_val_loss, done.state_bytes = "succeeded", 1.5, 123
    with session_scope() as s:  # replay with the same key: same experiment, nothing new
        again, ids2 = create_experiment(s, spec, owner="me", idempotency_key="k1")
        assert again.id == exp_id and ids2 == []
        with pytest.raises(IdempotencyConflictError, match="k1"):
            create_experiment(s, _spec(seeds=[5]), owner="me", idempotency_key="k1")
    with session_scope() as s:  # identical run already succeeded: reused, not retrained
        exp2, ids3 = create_experiment(s, spec)
        reused = s.scalars(
            select(Run).where(Run.experiment_id == exp2.id, Run.status == "succeeded")
        ).all()
    assert len(ids3) == 7 and len(reused) == 1
    assert reused[0].reused_from_id == done.id and reused[0].final_val_loss == 1.5


def test_validate_recipe_reports_state_bytes(data_dir: Path) -> None:
    from records.recipes import preset_names, validate_recipe

    assert "adamw" in preset_names()
    info = validate_recipe("adamw", workload="synthetic-lm")
    assert info["name"] == "adamw" and len(info["hash"]) >= 16
    # AdamW keeps two fp32 moments per parameter: 8 bytes/param
    assert info["state_bytes_per_param"] == pytest.approx(8.0)
    again = validate_recipe(info["canonical"])
    assert again["hash"] == info["hash"]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_recipe_dicts = st.dictionaries(
    st.sampled_from(["schema", "lr", "weight_decay", "design", "pipeline", "name", "x"]),
    _json,
    max_size=4,
)
_specs = st.fixed_dictionaries(
    {
        "recipes": st.one_of(
            st.text(max_size=10),
            st.lists(
                st.one_of(st.sampled_from(["adamw", "lion"]), _recipe_dicts),
                min_size=1,
                max_size=3,
            ),
        ),
        "workload": st.sampled_from(["synthetic-lm", "digits-mlp", "nope"]),
    },
    optional={
        "steps": st.integers(),
        "seeds": st.lists(st.integers(), max_size=4),
        "lr": st.floats(),
        "lr_grid": st.lists(st.floats(), max_size=3),
        "queue": st.text(max_size=4),
    },
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=_specs)
def test_any_spec_gives_a_validation_error_or_a_plan(data_dir: Path, data: dict) -> None:  # type: ignore[type-arg]
    """Client input never raises anything but ValidationError/RecipeError (API: 422, no 500)."""
    from records.experiments import ExperimentCreate, plan_experiment
    from records.recipes import RecipeError

    try:
        spec = ExperimentCreate.model_validate(data)
    except ValidationError:
        return
    try:
        plan = plan_experiment(spec)
    except RecipeError as exc:
        assert exc.errors and all("loc" in e and e["msg"] for e in exc.errors)
        return
    assert plan.runs and all(math.isfinite(r.lr) and r.lr > 0 for r in plan.runs)


def test_process_layout_picks_the_queue_and_is_validated(data_dir: Path) -> None:
    from records.experiments import plan_experiment

    assert _spec().layout() == (1, "none")
    assert _spec(gpus=2).layout() == (2, "fsdp")  # several processes: FSDP2 unless told
    assert _spec(gpus=4, parallel="ddp").layout() == (4, "ddp")
    assert plan_experiment(_spec(gpus=2, queue="gpu")).queue == "gpu-2"
    assert plan_experiment(_spec(gpus=2, queue="cpu")).queue == "cpu"  # gloo ranks on a CPU node
    assert plan_experiment(_spec(gpus=1, queue="gpu")).queue == "gpu"
    with pytest.raises(ValidationError, match="needs gpus > 1"):
        _spec(parallel="fsdp")
    with pytest.raises(ValidationError, match="'ddp' or 'fsdp'"):
        _spec(gpus=2, parallel="none")
    with pytest.raises(ValidationError) as err:
        _spec(gpus=3)
    assert _locs(err.value) == [("gpus",)]


def test_a_multi_process_run_is_not_reused_from_a_one_process_result(db: Path) -> None:
    from core.db import session_scope
    from core.models import Run
    from records.experiments import create_experiment

    with session_scope() as s:
        exp, _ = create_experiment(s, _spec(recipes=["adamw"]))
        (done,) = s.scalars(select(Run).where(Run.experiment_id == exp.id)).all()
        done.status, done.final_val_loss = "succeeded", 1.5
    with session_scope() as s:
        exp2, ids = create_experiment(s, _spec(recipes=["adamw"], gpus=2))
        (run,) = s.scalars(select(Run).where(Run.experiment_id == exp2.id)).all()
        assert ids == [run.id] and run.status == "queued" and run.reused_from_id is None
        assert (run.gpus, run.parallel) == (2, "fsdp")
    with session_scope() as s:
        exp3, ids3 = create_experiment(s, _spec(recipes=["adamw"]))
        assert ids3 == []  # the same one-process run is still reused
