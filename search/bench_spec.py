"""What a client submits to start a benchmark, and its validation against catalog and caps.

A benchmark is the claim-making counterpart of a study (services.md §4): the baseline and every
recipe are tuned with the SAME number of trials at every horizon (re-tuned per horizon, never
transferred), on a tuning seed that is never a confirmation seed; the best config of each
(arm, horizon) then runs on every confirmation seed. :func:`plan_benchmark` resolves it without
touching the database and raises :class:`~records.recipes.RecipeError` with field paths.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.config import Settings, get_settings
from core.errors import NotFound
from records.experiments import RecipeRef, device_queue
from records.recipes import RecipeError, UnknownNameError, resolve_recipe, state_bytes_on
from search.bench_space import HParamSpace, pipeline_form, tunable_axes

MIN_SEEDS = 3


class ArmRef(RecipeRef):
    """One arm: a preset name or a recipe object, optionally named, with its tunable space."""

    space: HParamSpace | None = Field(None, description="tunable ranges (default per axis)")


class TuningSpec(BaseModel):
    """The tuning protocol: identical for every arm and horizon."""

    model_config = ConfigDict(extra="forbid")
    budget: int = Field(6, ge=1, description="Optuna trials per (arm, horizon)")
    seed: int = Field(0, ge=0, lt=2**31, description="data/init seed of tuning runs and sampler")
    sampler: Literal["tpe", "random", "gp"] = "tpe"
    parallelism: int = Field(2, ge=1, le=64, description="trials in flight per cell")


def _as_ref(item: Any) -> Any:
    if isinstance(item, str):
        return {"preset": item}
    if isinstance(item, dict) and not ({"preset", "recipe"} & set(item)):
        return {"recipe": item}
    return item


class BenchmarkSpec(BaseModel):
    """A benchmark spec (API body, CLI YAML)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=200)
    workload: str = Field(..., description="a workload name (GET /v1/workloads)")
    baseline: ArmRef = Field(default_factory=lambda: ArmRef(preset="adamw"))
    recipes: list[ArmRef] = Field(..., min_length=1)
    horizons: list[int] = Field(..., min_length=1, description="steps; each its own schedule")
    seeds: list[int] = Field(..., description=f"confirmation seeds (>= {MIN_SEEDS})")
    tuning: TuningSpec = Field(default_factory=TuningSpec)
    queue: Literal["cpu", "gpu"] | None = None

    @field_validator("baseline", mode="before")
    @classmethod
    def _baseline(cls, value: Any) -> Any:
        return _as_ref(value)

    @field_validator("recipes", mode="before")
    @classmethod
    def _recipes(cls, value: Any) -> Any:
        return [_as_ref(v) for v in (value if isinstance(value, list) else [value])]

    @field_validator("horizons")
    @classmethod
    def _horizons(cls, value: list[int]) -> list[int]:
        if any(h < 1 for h in value):
            raise ValueError("horizons must be >= 1 step")
        if len(set(value)) != len(value):
            raise ValueError("horizons must be distinct")
        return sorted(value)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if len(value) < MIN_SEEDS:
            raise ValueError(
                f"at least {MIN_SEEDS} confirmation seeds are needed for a confidence "
                f"interval, got {len(value)}"
            )
        if len(set(value)) != len(value):
            raise ValueError("seeds must be distinct")
        if any(s < 0 or s >= 2**31 for s in value):
            raise ValueError("seeds must be in [0, 2**31)")
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> BenchmarkSpec:
        if self.tuning.seed in self.seeds:
            raise ValueError(
                f"the tuning seed {self.tuning.seed} must not be a confirmation seed "
                "(tuning and confirmation seeds are disjoint)"
            )
        return self

    def arms(self) -> list[ArmRef]:
        """The baseline first, then the recipes (arm index = position)."""
        return [self.baseline, *self.recipes]


class PlannedArm(BaseModel):
    """A resolved arm: display name, recipe (as given and in pipeline form), tunable axes."""

    name: str
    canonical: dict[str, Any]
    digest: str
    pipeline: dict[str, Any]
    axes: dict[str, Any]


class BenchmarkPlan(BaseModel):
    workload: str
    queue: str
    horizons: list[int]
    arms: list[PlannedArm]
    n_runs: int  # upper bound: arms x horizons x (budget + seeds)


def plan_benchmark(spec: BenchmarkSpec, settings: Settings | None = None) -> BenchmarkPlan:
    """Resolve workload, arms and axes; check the caps. Raises RecipeError with field paths."""
    from core.workloads import get_workload

    settings = settings or get_settings()
    try:
        workload = get_workload(spec.workload)
    except NotFound as exc:
        raise UnknownNameError.named(("workload",), "workload", spec.workload, exc.valid) from None
    cap = min(settings.max_steps, workload.max_steps)
    for i, horizon in enumerate(spec.horizons):
        if horizon > cap:
            raise RecipeError.at(
                ("horizons", i),
                f"horizon {horizon} exceeds the cap of {cap} steps for workload {workload.name!r}",
            )
    queue = device_queue(spec.queue, workload, settings)
    n_runs = len(spec.arms()) * len(spec.horizons) * (spec.tuning.budget + len(spec.seeds))
    if n_runs > settings.max_benchmark_runs:
        raise RecipeError.at(
            (),
            f"{n_runs} runs (arms x horizons x (budget + seeds)) exceed the cap "
            f"max_benchmark_runs={settings.max_benchmark_runs}",
        )
    arms = [_plan_arm(ref, loc, workload) for ref, loc in _arm_locs(spec)]
    _unique_names(arms)
    return BenchmarkPlan(
        workload=workload.name, queue=queue, horizons=spec.horizons, arms=arms, n_runs=n_runs
    )


def _arm_locs(spec: BenchmarkSpec) -> list[tuple[ArmRef, tuple[Any, ...]]]:
    return [(spec.baseline, ("baseline",))] + [
        (ref, ("recipes", i)) for i, ref in enumerate(spec.recipes)
    ]


def _plan_arm(ref: ArmRef, loc: tuple[Any, ...], workload: Any) -> PlannedArm:
    try:
        name, canonical, digest = resolve_recipe(
            ref.model_dump(exclude={"space"}, exclude_none=True)
        )
        state_bytes_on(canonical, workload)  # a recipe that cannot train here: 422
        pipeline = pipeline_form(canonical)
    except RecipeError as exc:
        raise exc.prefixed(*loc) from None
    return PlannedArm(
        name=name or digest[:8],
        canonical=canonical,
        digest=digest,
        pipeline=pipeline,
        axes=_axes_json(tunable_axes(pipeline, ref.space)),
    )


def _axes_json(axes: dict[str, Any]) -> dict[str, Any]:
    return {k: v.model_dump() if hasattr(v, "model_dump") else list(v) for k, v in axes.items()}


def _unique_names(arms: list[PlannedArm]) -> None:
    """Later arms that repeat a name (e.g. the baseline's preset again) get ``name#i``."""
    seen: set[str] = set()
    for i, arm in enumerate(arms):
        if arm.name in seen:
            arm.name = f"{arm.name}#{i}"
        seen.add(arm.name)
