"""ORM tables of record (SQLAlchemy 2 typed mapping).

Table names never collide with Optuna's (``studies``, ``trials``, ``version_info``...): ours are
``recipes, experiments, runs, run_metrics, api_keys, search_studies, search_trials,
benchmarks, benchmark_cells``.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class RunStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    diverged = "diverged"
    cancelled = "cancelled"
    pruned = "pruned"


TERMINAL_STATUSES = frozenset(
    {
        RunStatus.succeeded,
        RunStatus.failed,
        RunStatus.diverged,
        RunStatus.cancelled,
        RunStatus.pruned,
    }
)


class StudyStatus(enum.StrEnum):
    running = "running"
    completed = "completed"
    cancelled = "cancelled"
    failed = "failed"


class BenchmarkStatus(enum.StrEnum):
    running = "running"
    completed = "completed"
    cancelled = "cancelled"
    failed = "failed"


class CellPhase(enum.StrEnum):
    """A benchmark cell (one recipe at one horizon): tuning, then confirmation seeds."""

    tuning = "tuning"
    confirming = "confirming"
    done = "done"
    failed = "failed"


#: How a run's final validation loss is measured (``runs.eval_protocol``). 1: the first
#: ``eval_batches`` windows of the held-out split (before benchmarks); 2: the final evaluation
#: on ``final_eval_batches`` batches strided across the whole held-out split. Stored results
#: are reused only under the current protocol.
EVAL_PROTOCOL = 2

#: Final-metric columns of a run (what a trainer result fills, and what a reuse copies).
METRIC_COLUMNS = (
    "final_val_loss",
    "steps_to_target",
    "target_loss",
    "stopped_step",
    "tokens_per_s",
    "wall_s",
    "state_bytes",
    "n_params",
    "state_bytes_per_param",
    "peak_mem_bytes",
)


class TrialStatus(enum.StrEnum):
    running = "running"
    complete = "complete"
    pruned = "pruned"
    failed = "failed"


class Recipe(Base):
    """A canonical recipe; equal recipes share one row (unique hash)."""

    __tablename__ = "recipes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str | None] = mapped_column(String(128))  # preset name, if it came from one
    canonical: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)  # shown to humans, not secret
    key_hash: Mapped[str] = mapped_column(String(128))  # sha256 of the full key
    # An admin key may cancel or change what other keys own.
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebSession(Base):
    """A web login (auth_mode=all): the cookie names it and is signed by the server secret;
    logout or a revoked key ends it. Only a hash of the cookie's random token is stored."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Experiment(Base):
    """One submitted spec; it fans out into runs (recipes x seeds x lrs)."""

    __tablename__ = "experiments"
    # Idempotency keys are per owner: two owners may use the same key.
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_experiments_owner_key"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    owner: Mapped[str | None] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # where it was started: api | cli (optforge run/compare) | demo (migration 0004)
    origin: Mapped[str] = mapped_column(String(16), default="api", server_default="api")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    runs: Mapped[list[Run]] = relationship(back_populates="experiment")


class SearchStudy(Base):
    """An optforge study; its Optuna twin lives in Optuna's own storage."""

    __tablename__ = "search_studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    optuna_study_name: Mapped[str] = mapped_column(String(200), unique=True)
    workload: Mapped[str] = mapped_column(String(64))
    steps: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=StudyStatus.running)
    n_trials: Mapped[int] = mapped_column(Integer)
    parallelism: Mapped[int] = mapped_column(Integer, default=1)
    sampler: Mapped[str] = mapped_column(String(32), default="tpe")
    seed: Mapped[int | None] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(128))
    origin: Mapped[str] = mapped_column(String(16), default="api", server_default="api")  # | cli
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    trials: Mapped[list[SearchTrial]] = relationship(back_populates="study")


class SearchTrial(Base):
    """One Optuna trial of a study: one recipe + lr, evaluated over one or more seeds (runs)."""

    __tablename__ = "search_trials"
    __table_args__ = (UniqueConstraint("study_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("search_studies.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # Optuna's trial number
    recipe_id: Mapped[int | None] = mapped_column(ForeignKey("recipes.id"))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # Optuna params
    status: Mapped[str] = mapped_column(String(16), default=TrialStatus.running)
    values: Mapped[list[Any] | None] = mapped_column(JSON)  # objective values when complete
    failure_reason: Mapped[str | None] = mapped_column(Text)
    pruned_step: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    study: Mapped[SearchStudy] = relationship(back_populates="trials")
    runs: Mapped[list[Run]] = relationship(back_populates="trial")


class Benchmark(Base):
    """A fair comparison: every arm tuned with the same budget per horizon, then confirmed on
    fresh seeds (search/benchmarks.py); statistics are computed from the stored runs."""

    __tablename__ = "benchmarks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    workload: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=BenchmarkStatus.running)
    owner: Mapped[str | None] = mapped_column(String(128))
    origin: Mapped[str] = mapped_column(String(16), default="api")  # api | cli | study
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cells: Mapped[list[BenchmarkCell]] = relationship(
        back_populates="benchmark", order_by="BenchmarkCell.id"
    )


class BenchmarkCell(Base):
    """One arm (recipe) at one horizon: an Optuna sub-study of ``budget`` trials on the tuning
    seed, then the best config on every confirmation seed."""

    __tablename__ = "benchmark_cells"
    __table_args__ = (UniqueConstraint("benchmark_id", "arm", "horizon"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    benchmark_id: Mapped[int] = mapped_column(ForeignKey("benchmarks.id"), index=True)
    arm: Mapped[int] = mapped_column(Integer)  # 0 = the baseline, then the spec's recipes
    name: Mapped[str] = mapped_column(String(128))
    recipe_id: Mapped[int] = mapped_column(ForeignKey("recipes.id"))  # the untuned recipe
    horizon: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(16), default=CellPhase.tuning)
    optuna_study_name: Mapped[str] = mapped_column(String(200), unique=True)
    axes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # tunable ranges
    # Optuna trial number (str) -> {"params", "run_id", "state", "value"}: our record of the
    # sub-study, so reports never need Optuna.
    trials: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    best: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # {"number", "params", "value"}
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    benchmark: Mapped[Benchmark] = relationship(back_populates="cells")
    runs: Mapped[list[Run]] = relationship(back_populates="cell", order_by="Run.id")


class Run(Base):
    """One seeded training run: the unit a worker claims, trains and records."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_board", "workload", "steps", "status"),
        Index("ix_runs_lease", "status", "lease_expires_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id"), index=True)
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("search_trials.id"), index=True)
    benchmark_cell_id: Mapped[int | None] = mapped_column(
        ForeignKey("benchmark_cells.id"), index=True
    )
    bench_phase: Mapped[str | None] = mapped_column(String(8))  # "tune" | "confirm"
    bench_trial: Mapped[int | None] = mapped_column(Integer)  # Optuna trial number (tune)
    recipe_id: Mapped[int] = mapped_column(ForeignKey("recipes.id"), index=True)
    workload: Mapped[str] = mapped_column(String(64))
    steps: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    lr: Mapped[float] = mapped_column(Float)
    # Linear warmup fraction of the schedule (None: the trainer's default, 0.1).
    warmup_frac: Mapped[float | None] = mapped_column(Float)
    eval_protocol: Mapped[int] = mapped_column(Integer, default=EVAL_PROTOCOL)
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    # processes of the run (one per GPU; CPU ranks use gloo) and how they split the model
    gpus: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    parallel: Mapped[str] = mapped_column(String(8), default="none", server_default="none")
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.queued, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    reused_from_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    # --- results (final metrics; the curve is in run_metrics) -----------------------------
    final_val_loss: Mapped[float | None] = mapped_column(Float)
    steps_to_target: Mapped[int | None] = mapped_column(Integer)  # None = not reached
    target_loss: Mapped[float | None] = mapped_column(Float)
    stopped_step: Mapped[int | None] = mapped_column(Integer)  # diverged/pruned/cancelled at
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    wall_s: Mapped[float | None] = mapped_column(Float)
    state_bytes: Mapped[int | None] = mapped_column(BigInteger)
    n_params: Mapped[int | None] = mapped_column(BigInteger)
    state_bytes_per_param: Mapped[float | None] = mapped_column(Float)
    peak_mem_bytes: Mapped[int | None] = mapped_column(BigInteger)
    env: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Last time a train_run message was sent for this queued run (the reaper re-sends when old).
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    recipe: Mapped[Recipe] = relationship()
    experiment: Mapped[Experiment | None] = relationship(back_populates="runs")
    trial: Mapped[SearchTrial | None] = relationship(back_populates="runs")
    cell: Mapped[BenchmarkCell | None] = relationship(back_populates="runs")


class RunMetric(Base):
    """One point of a run's curve; (run_id, step) is unique so a retried run never duplicates."""

    __tablename__ = "run_metrics"
    __table_args__ = (UniqueConstraint("run_id", "step"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    elapsed_s: Mapped[float] = mapped_column(Float, default=0.0)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
