"""Experiments: validate a submitted spec and fan it out into runs (recipes x seeds x lrs).

``create_experiment`` does not commit and does not dispatch: the caller commits, THEN sends
``core.broker.dispatch_run(run_id, queue)`` for each returned id, so a worker never receives a
message for a row it cannot see. No torch at module level (recipes resolve lazily).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.broker import GpuCount, run_queue
from core.config import Settings, get_settings
from core.errors import Conflict, NotFound
from core.models import Experiment, Run, RunStatus
from core.workloads import WorkloadSpec, get_workload
from records.recipes import RecipeError, UnknownNameError, resolve_recipe, state_bytes_on
from records.reuse import reuse_if_stored, upsert_recipe_row

__all__ = [
    "ExperimentCreate",
    "IdempotencyConflictError",
    "RecipeRef",
    "SpecError",
    "create_experiment",
    "device_queue",
    "plan_experiment",
]

SpecError = RecipeError  # a bad spec: .errors with field paths (loc), like pydantic's


class IdempotencyConflictError(Conflict):
    """The Idempotency-Key was used before with a different spec."""


class RecipeRef(BaseModel):
    """One recipe of an experiment: a preset name or a recipe object, optionally named."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    preset: str | None = Field(None, description="a preset name (GET /v1/presets)")
    recipe: dict[str, Any] | None = Field(None, description="a recipe (design or pipeline form)")
    name: str | None = Field(None, max_length=128, description="display name")

    @model_validator(mode="after")
    def _one_source(self) -> RecipeRef:
        if (self.preset is None) == (self.recipe is None):
            raise ValueError("give exactly one of 'preset' or 'recipe'")
        return self


def _finite_positive(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {value}")
    return value


class ExperimentCreate(BaseModel):
    """An experiment spec: every recipe x seed x lr becomes one run of ``workload``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    recipes: list[RecipeRef] = Field(
        ..., min_length=1, description="preset names or recipe objects (or a single one)"
    )
    workload: str = Field(..., description="a workload name (GET /v1/workloads)")
    steps: int | None = Field(None, ge=1, description="training steps (default: workload's)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    lr: float | None = Field(None, description="one lr for every recipe (default: recipe's)")
    lr_grid: list[float] | None = Field(None, min_length=1, description="lrs to sweep")
    queue: Literal["cpu", "gpu"] | None = Field(None, description="worker queue")
    gpus: GpuCount = Field(
        1, description="processes per run under torchrun: GPUs (queue gpu-N), or gloo CPU ranks"
    )
    parallel: Literal["none", "ddp", "fsdp"] | None = Field(
        None, description="how several processes split a run (default: fsdp when gpus > 1)"
    )
    name: str | None = Field(None, max_length=200)

    @field_validator("recipes", mode="before")
    @classmethod
    def _refs(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        out: list[Any] = []
        for item in items:
            if isinstance(item, str):
                out.append({"preset": item})
            elif isinstance(item, dict) and not ({"preset", "recipe"} & set(item)):
                out.append({"recipe": item})
            else:
                out.append(item)
        return out

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        cap = get_settings().max_seeds
        if len(value) > cap:
            raise ValueError(f"at most {cap} seeds (cap max_seeds={cap}), got {len(value)}")
        if len(set(value)) != len(value):
            raise ValueError("seeds must be distinct")
        if any(s < 0 or s >= 2**31 for s in value):
            raise ValueError("seeds must be in [0, 2**31)")
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: int | None) -> int | None:
        cap = get_settings().max_steps
        if value is not None and value > cap:
            raise ValueError(f"steps must be <= {cap} (cap max_steps={cap}), got {value}")
        return value

    @field_validator("lr")
    @classmethod
    def _lr(cls, value: float | None) -> float | None:
        return None if value is None else _finite_positive(value)

    @field_validator("lr_grid")
    @classmethod
    def _lr_grid(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        cap = get_settings().max_lr_grid
        if len(value) > cap:
            raise ValueError(f"at most {cap} lrs (cap max_lr_grid={cap}), got {len(value)}")
        if len(set(value)) != len(value):
            raise ValueError("lr_grid values must be distinct")
        return [_finite_positive(v) for v in value]

    @model_validator(mode="after")
    def _lr_xor_grid(self) -> ExperimentCreate:
        if self.lr is not None and self.lr_grid is not None:
            raise ValueError("give 'lr' or 'lr_grid', not both")
        return self

    @model_validator(mode="after")
    def _parallel_needs_gpus(self) -> ExperimentCreate:
        if self.gpus == 1 and self.parallel not in (None, "none"):
            raise ValueError(f"parallel {self.parallel!r} needs gpus > 1")
        if self.gpus > 1 and self.parallel == "none":
            raise ValueError("gpus > 1 needs parallel 'ddp' or 'fsdp'")
        return self

    def layout(self) -> tuple[int, str]:
        """``(processes, parallel mode)`` of every run of the experiment."""
        return self.gpus, self.parallel or ("fsdp" if self.gpus > 1 else "none")


class PlannedRun(BaseModel):
    recipe_index: int
    recipe_hash: str
    seed: int
    lr: float


class Plan(BaseModel):
    """A validated spec resolved against the catalog and the recipes (no DB yet)."""

    workload: str
    steps: int
    queue: str
    recipes: list[tuple[str | None, dict[str, Any], str]]  # (name, canonical, hash)
    runs: list[PlannedRun]


def plan_experiment(spec: ExperimentCreate, settings: Settings | None = None) -> Plan:
    """Resolve recipes, workload, steps, lrs and queue; check the caps. Raises SpecError."""
    settings = settings or get_settings()
    workload = _workload(spec.workload)
    steps = _steps(spec, workload, settings)
    queue = run_queue(device_queue(spec.queue, workload, settings), spec.gpus)
    _check_run_count(spec, settings)
    recipes = _resolve_recipes(spec, workload)
    runs = _planned_runs(spec, recipes, workload.default_lr)
    return Plan(workload=workload.name, steps=steps, queue=queue, recipes=recipes, runs=runs)


def _workload(name: str) -> WorkloadSpec:
    try:
        return get_workload(name)
    except NotFound as exc:
        raise UnknownNameError.named(("workload",), "workload", name, exc.valid) from None


def _steps(spec: ExperimentCreate, workload: WorkloadSpec, settings: Settings) -> int:
    """The run length: the spec's or the workload's default, within both caps."""
    steps = spec.steps or workload.default_steps
    cap = min(settings.max_steps, workload.max_steps)
    if steps > cap:
        raise SpecError.at(
            ("steps",), f"steps must be <= {cap} for workload {workload.name!r} (cap), got {steps}"
        )
    return steps


def device_queue(requested: str | None, workload: WorkloadSpec, settings: Settings) -> str:
    """cpu or gpu: the requested one, else the settings' default (a GPU-sized workload needs
    gpu). Raises SpecError at ``queue`` for a GPU-sized workload asked to run on cpu."""
    queue = requested or ("gpu" if workload.gpu_only else settings.default_queue)
    if workload.gpu_only and queue != "gpu":
        raise SpecError.at(
            ("queue",), f"workload {workload.name!r} is GPU-sized: queue must be 'gpu'"
        )
    return queue


def _check_run_count(spec: ExperimentCreate, settings: Settings) -> None:
    n_lrs = len(spec.lr_grid) if spec.lr_grid else 1
    total = len(spec.recipes) * len(spec.seeds) * n_lrs
    if total > settings.max_runs_per_request:
        cap_runs = settings.max_runs_per_request
        raise SpecError.at(
            (),
            f"{total} runs (recipes x seeds x lrs) exceed the cap max_runs_per_request={cap_runs}",
        )


def _resolve_recipes(
    spec: ExperimentCreate, workload: WorkloadSpec
) -> list[tuple[str | None, dict[str, Any], str]]:
    """(name, canonical, hash) of each recipe; one that cannot train on the workload is a 422."""
    recipes = []
    for i, ref in enumerate(spec.recipes):
        try:
            recipes.append(resolve_recipe(ref))
            state_bytes_on(recipes[-1][1], workload)
        except RecipeError as exc:
            raise exc.prefixed("recipes", i) from None
    return recipes


def _planned_runs(
    spec: ExperimentCreate,
    recipes: list[tuple[str | None, dict[str, Any], str]],
    default_lr: float,
) -> list[PlannedRun]:
    """recipes x lrs x seeds; the lr is the grid's, the spec's, the recipe's or the default."""
    runs = []
    for i, (_, canonical, digest) in enumerate(recipes):
        lrs = spec.lr_grid or [spec.lr or _recipe_lr(canonical) or default_lr]
        runs += [
            PlannedRun(recipe_index=i, recipe_hash=digest, seed=s, lr=lr)
            for lr in lrs
            for s in spec.seeds
        ]
    return runs


def _recipe_lr(canonical: dict[str, Any]) -> float | None:
    lr = canonical.get("lr")
    return float(lr) if isinstance(lr, int | float) and lr > 0 else None


def create_experiment(
    session: Session,
    spec: ExperimentCreate,
    owner: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[Experiment, list[int]]:
    """Insert the experiment, its recipes and runs; return (experiment, run ids to dispatch).

    With an ``idempotency_key`` seen before (same spec) the earlier experiment is returned with
    nothing to dispatch; a different spec raises IdempotencyConflictError. An identical run
    that already succeeded (recipe, workload, steps, seed, lr) is reused: a succeeded copy with
    ``reused_from_id`` set, not retrained. Flushes; the caller commits, then dispatches. The
    new experiment's ``runs`` are in memory, so a caller can answer without reading them back.
    """
    body = spec.model_dump(mode="json", exclude_none=True)
    earlier = _by_key(session, idempotency_key, body, owner) if idempotency_key else None
    if earlier is not None:
        return earlier, []
    plan = plan_experiment(spec)
    exp = Experiment(spec=body, owner=owner, idempotency_key=idempotency_key, runs=[])
    stored = _insert_or_earlier(session, exp, body)
    if stored is not exp:
        return stored, []
    return exp, _add_runs(session, exp, plan, spec.layout())


def _insert_or_earlier(session: Session, exp: Experiment, body: dict[str, Any]) -> Experiment:
    """``exp`` inserted, or the experiment a concurrent request with the same key stored first."""
    try:
        with session.begin_nested():
            session.add(exp)
            session.flush()
    except IntegrityError:
        earlier = _by_key(session, exp.idempotency_key or "", body, exp.owner)
        if earlier is None:
            raise
        return earlier
    return exp


def _add_runs(session: Session, exp: Experiment, plan: Plan, layout: tuple[int, str]) -> list[int]:
    """The planned run rows of ``exp`` (reused where an identical result is stored); returns the
    ids of the queued ones, to dispatch after the commit."""
    recipe_ids = [upsert_recipe_row(session, n, c, h).id for n, c, h in plan.recipes]
    gpus, parallel = layout
    to_dispatch: list[int] = []
    for planned in plan.runs:
        run = Run(
            experiment_id=exp.id,
            recipe_id=recipe_ids[planned.recipe_index],
            workload=plan.workload,
            steps=plan.steps,
            seed=planned.seed,
            lr=planned.lr,
            queue=plan.queue,
            gpus=gpus,
            parallel=parallel,
            status=RunStatus.queued,
        )
        reuse_if_stored(session, run)
        session.add(run)
        session.flush()
        exp.runs.append(run)
        if run.status == RunStatus.queued:
            to_dispatch.append(run.id)
    return to_dispatch


def _by_key(
    session: Session, key: str, body: dict[str, Any], owner: str | None
) -> Experiment | None:
    """The owner's experiment with this Idempotency-Key (keys are scoped per owner)."""
    same_owner = Experiment.owner.is_(None) if owner is None else Experiment.owner == owner
    earlier = session.scalars(
        select(Experiment).where(Experiment.idempotency_key == key, same_owner)
    ).first()
    if earlier is not None and earlier.spec != body:
        raise IdempotencyConflictError(
            f"Idempotency-Key {key!r} was already used with a different spec "
            f"(experiment {earlier.id})"
        )
    return earlier
