"""Response (``*Public``) and request bodies of the /v1 API that are not search-layer specs.

Experiment bodies are ``records.experiments.ExperimentCreate``; study bodies are
``search.spec.StudySpec``. Non-finite floats serialise as ``null``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from records.runs import RunRecord


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True, ser_json_inf_nan="null")


class HealthPublic(_Public):
    status: str  # "ok" | "degraded"
    version: str
    database: str  # "ok" | "error: ..."
    backend: str  # "sqlite" | "postgresql" | ...
    broker: str  # transport scheme only (no credentials)
    embedded: bool
    auth_mode: str


class WorkloadPublic(_Public):
    name: str
    kind: str
    description: str
    model: dict[str, Any]
    n_params: int
    batch_size: int
    seq_len: int
    default_steps: int
    max_steps: int
    default_lr: float
    eval_every: int
    target_loss: float | None = None
    expected_cpu_s_per_step: float | None = None


class PresetPublic(_Public):
    name: str
    hash: str
    description: str | None = None
    recipe: dict[str, Any]


class RecipeValidateIn(BaseModel):
    """A recipe (design or pipeline form) or a preset name, and optionally a workload."""

    model_config = ConfigDict(extra="forbid")

    recipe: dict[str, Any] | None = None
    preset: str | None = Field(None, max_length=128)
    workload: str | None = Field(None, max_length=64)


class RecipeValidationPublic(_Public):
    valid: bool = True
    name: str | None = None
    hash: str
    canonical: dict[str, Any]
    description: str | None = None
    workload: str | None = None
    state_bytes: int | None = None
    n_params: int | None = None
    state_bytes_per_param: float | None = None


class RunPublic(RunRecord, _Public):
    """A run (``records.runs.RunRecord``: the one shape of a run, built by ``run_dict``)."""


class MetricPointPublic(_Public):
    step: int
    tokens: int
    elapsed_s: float
    train_loss: float | None
    val_loss: float | None
    lr: float | None


class RunMetricsPublic(_Public):
    run_id: int
    status: str
    points: list[MetricPointPublic]


class ExperimentPublic(_Public):
    id: int
    owner: str | None
    spec: dict[str, Any]
    created_at: datetime | None
    status: str  # "queued" | "running" | "finished"
    counts: dict[str, int]  # runs per status
    runs: list[RunPublic]


class ExperimentSummaryPublic(_Public):
    id: int
    owner: str | None
    created_at: datetime | None
    status: str
    counts: dict[str, int]


class LeaderboardRowPublic(_Public):
    recipe_id: int
    recipe_hash: str
    name: str
    best_lr: float
    val_loss_mean: float | None
    val_loss_std: float | None
    n_runs: int
    n_runs_total: int
    n_lrs: int
    steps_to_target: float | None
    state_bytes: int | None
    state_bytes_per_param: float | None
    tokens_per_s: float | None
    pareto: bool


class LeaderboardPublic(_Public):
    workload: str | None
    steps: int | None
    sort: str
    limit: int
    offset: int
    total: int
    rows: list[LeaderboardRowPublic]
    boards: list[dict[str, Any]]  # (workload, steps) pairs with results, when not given
    # Runs as submitted, no equal tuning budget: never a claim (claims: /v1/leaderboard/confirmed)
    evidence: Literal["exploratory"] = "exploratory"
