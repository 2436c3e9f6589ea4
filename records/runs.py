"""Read and cancel runs and experiments (plain dicts for the API, web pages and CLI; no torch).

``RunRecord`` is THE shape of one run (``run_dict``): the API's ``RunPublic`` is it, the web
pages and study views extend it. Raises ``NotFound`` for an unknown id and ``RunStateError``
(a Conflict) when a run cannot be cancelled.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any, cast

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from core.db import aware, rowcount
from core.errors import Conflict, NotFound
from core.models import Benchmark, Experiment, Recipe, Run, RunMetric, RunStatus, SearchStudy

METRICS_MAX = 10_000


class RunRecord(BaseModel):
    """One run as every reader sees it: its columns plus its recipe's hash and name."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    experiment_id: int | None
    trial_id: int | None
    recipe_id: int
    recipe_hash: str | None = None
    recipe_name: str | None = None
    workload: str
    steps: int
    seed: int
    lr: float
    queue: str
    gpus: int = 1  # processes of the run (torchrun ranks)
    parallel: str = "none"  # none | ddp | fsdp
    status: str
    attempts: int
    cancel_requested: bool
    failure_reason: str | None
    reused_from_id: int | None
    final_val_loss: float | None
    steps_to_target: int | None
    target_loss: float | None
    stopped_step: int | None
    tokens_per_s: float | None
    wall_s: float | None
    state_bytes: int | None
    n_params: int | None
    state_bytes_per_param: float | None
    peak_mem_bytes: int | None
    env: dict[str, Any] | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


_RUN_COLUMNS = [f for f in RunRecord.model_fields if f not in ("recipe_hash", "recipe_name")]


class RunStateError(Conflict):
    """The run is in a state that does not allow the operation (e.g. cancel a finished run)."""


def run_dict(run: Run, recipe: Recipe | None = None) -> dict[str, Any]:
    """Every column of a run, plus its recipe's hash and name (times as aware UTC datetimes,
    so a row just written and the same row read back are one dict)."""
    out = {f: getattr(run, f) for f in _RUN_COLUMNS}
    for ts in ("created_at", "started_at", "finished_at"):
        out[ts] = aware(out[ts])
    recipe = recipe or run.recipe
    out["recipe_hash"] = recipe.hash if recipe else None
    out["recipe_name"] = recipe.name if recipe else None
    return out


def get_run(session: Session, run_id: int) -> dict[str, Any]:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}")
    return run_dict(run)


def run_metrics(
    session: Session, run_id: int, after_step: int = -1, limit: int = METRICS_MAX
) -> dict[str, Any]:
    """The curve of a run (points with step > ``after_step``), ordered by step."""
    status = session.scalar(select(Run.status).where(Run.id == run_id))
    if status is None:
        raise NotFound(f"no run {run_id}")
    rows = session.scalars(
        select(RunMetric)
        .where(RunMetric.run_id == run_id, RunMetric.step > after_step)
        .order_by(RunMetric.step)
        .limit(limit)
    ).all()
    points = [
        {
            "step": m.step,
            "tokens": m.tokens,
            "elapsed_s": m.elapsed_s,
            "train_loss": m.train_loss,
            "val_loss": m.val_loss,
            "lr": m.lr,
        }
        for m in rows
    ]
    return {"run_id": run_id, "status": status, "points": points}


def cancel_runs(session: Session, *where: Any) -> int:
    """Cancel the queued runs matching ``where`` now and ask the running ones to stop (the
    trainer checks the flag); finished runs stay as they are. Both updates are guarded by the
    status, so a cancel never races a worker's claim into an inconsistent row; loaded rows are
    refreshed. Returns how many runs were cancelled or asked to stop. The caller commits."""
    sync = {"synchronize_session": "fetch"}
    done = session.execute(
        update(Run)
        .where(*where, Run.status == RunStatus.queued.value)
        .values(
            status=RunStatus.cancelled.value, cancel_requested=True, finished_at=datetime.now(UTC)
        )
        .execution_options(**sync)
    )
    asked = session.execute(
        update(Run)
        .where(*where, Run.status == RunStatus.running.value)
        .values(cancel_requested=True)
        .execution_options(**sync)
    )
    return rowcount(done) + rowcount(asked)


def cancel_run(session: Session, run_id: int) -> dict[str, Any]:
    """Cancel a queued run now, or ask a running one to stop (:func:`cancel_runs`)."""
    changed = cancel_runs(session, Run.id == run_id)
    run = session.get(Run, run_id, populate_existing=True)
    if run is None:
        raise NotFound(f"no run {run_id}")
    if not changed:
        raise RunStateError(f"run {run_id} is already {run.status}; only queued or running runs")
    return run_dict(run)


def _status_of(counts: Counter[str]) -> str:
    if counts.get(RunStatus.running, 0):
        return "running"
    if counts.get(RunStatus.queued, 0):
        return "queued"
    return "finished"


def load_experiment(session: Session, experiment_id: int) -> Experiment:
    """The experiment row with its runs and their recipes loaded; NotFound if there is none."""
    exp = session.get(
        Experiment,
        experiment_id,
        options=[selectinload(Experiment.runs).selectinload(Run.recipe)],
    )
    if exp is None:
        raise NotFound(f"no experiment {experiment_id}")
    return exp


def experiment_dict(session: Session, experiment_id: int) -> dict[str, Any]:
    """An experiment with its runs (and their recipes) and per-status counts."""
    return experiment_record(load_experiment(session, experiment_id))


def experiment_record(exp: Experiment) -> dict[str, Any]:
    """``exp`` as one dict, from the rows in hand (e.g. just flushed): no query of its own."""
    runs = [run_dict(run) for run in sorted(exp.runs, key=lambda r: r.id)]
    counts = Counter(r["status"] for r in runs)
    return {
        "id": exp.id,
        "owner": exp.owner,
        "spec": exp.spec,
        "created_at": aware(exp.created_at),
        "status": _status_of(counts),
        "counts": dict(counts),
        "runs": runs,
    }


def list_experiments(session: Session, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Experiments newest first, with run counts per status."""
    exps = session.scalars(
        select(Experiment).order_by(Experiment.id.desc()).limit(limit).offset(offset)
    ).all()
    counts: dict[int, Counter[str]] = {e.id: Counter() for e in exps}
    if exps:
        stmt = (
            select(Run.experiment_id, Run.status, func.count())
            .where(Run.experiment_id.in_(list(counts)))
            .group_by(Run.experiment_id, Run.status)
        )
        for eid, status, n in session.execute(stmt):
            if eid is not None:
                counts[eid][status] = n
    return [
        {
            "id": e.id,
            "owner": e.owner,
            "created_at": aware(e.created_at),
            "status": _status_of(counts[e.id]),
            "counts": dict(counts[e.id]),
        }
        for e in exps
    ]


def cancel_experiment(session: Session, experiment_id: int) -> dict[str, Any]:
    """Cancel every queued or running run of the experiment (finished runs stay as they are);
    returns the experiment. The caller commits."""
    exp = load_experiment(session, experiment_id)
    cancel_runs(session, Run.experiment_id == experiment_id)
    return experiment_record(exp)


_OWNED = {Experiment: "experiment", SearchStudy: "study", Benchmark: "benchmark"}


def owner_of(
    session: Session, table: type[Experiment | SearchStudy | Benchmark], row_id: int
) -> str | None:
    """The owner (API key name) of an experiment, study or benchmark; NotFound if none."""
    row = cast(Experiment | SearchStudy | Benchmark | None, session.get(table, row_id))
    if row is None:
        raise NotFound(f"no {_OWNED[table]} {row_id}")
    return row.owner


def run_owner(session: Session, run_id: int) -> str | None:
    """The owner of a run: its experiment's, study's or benchmark's (NotFound: no such run)."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}")
    if run.experiment is not None:
        return run.experiment.owner
    if run.trial is not None:
        return run.trial.study.owner
    if run.cell is not None:
        return run.cell.benchmark.owner
    return None
