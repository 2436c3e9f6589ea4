"""Read and cancel runs and experiments (plain dicts for the API, web pages and CLI; no torch).

Raises ``LookupError`` for an unknown id and ``RunStateError`` when a run cannot be cancelled.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.db import rowcount
from core.models import Experiment, Recipe, Run, RunMetric, RunStatus

_RUN_FIELDS = (
    "id experiment_id trial_id recipe_id workload steps seed lr queue status attempts "
    "cancel_requested failure_reason reused_from_id final_val_loss steps_to_target target_loss "
    "stopped_step tokens_per_s wall_s state_bytes n_params state_bytes_per_param peak_mem_bytes "
    "env created_at started_at finished_at"
).split()
METRICS_MAX = 10_000


class RunStateError(ValueError):
    """The run is in a state that does not allow the operation (e.g. cancel a finished run)."""


def run_dict(run: Run, recipe: Recipe | None = None) -> dict[str, Any]:
    """Every column of a run, plus its recipe's hash and name."""
    out = {f: getattr(run, f) for f in _RUN_FIELDS}
    recipe = recipe or run.recipe
    out["recipe_hash"] = recipe.hash if recipe else None
    out["recipe_name"] = recipe.name if recipe else None
    return out


def get_run(session: Session, run_id: int) -> dict[str, Any]:
    run = session.get(Run, run_id)
    if run is None:
        raise LookupError(f"no run {run_id}")
    return run_dict(run)


def run_metrics(
    session: Session, run_id: int, after_step: int = -1, limit: int = METRICS_MAX
) -> dict[str, Any]:
    """The curve of a run (points with step > ``after_step``), ordered by step."""
    status = session.scalar(select(Run.status).where(Run.id == run_id))
    if status is None:
        raise LookupError(f"no run {run_id}")
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


def cancel_run(session: Session, run_id: int) -> dict[str, Any]:
    """Cancel a queued run now, or ask a running one to stop (the trainer checks the flag).

    Both updates are guarded by the status, so a cancel never races a worker's claim into an
    inconsistent row. The caller commits.
    """
    now = datetime.now(UTC)
    done = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.queued.value)
        .values(status=RunStatus.cancelled.value, cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    if not rowcount(done):
        done = session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.running.value)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
    run = session.get(Run, run_id, populate_existing=True)
    if run is None:
        raise LookupError(f"no run {run_id}")
    if not rowcount(done):
        raise RunStateError(f"run {run_id} is already {run.status}; only queued or running runs")
    return run_dict(run)


def _status_of(counts: Counter[str]) -> str:
    if counts.get(RunStatus.running, 0):
        return "running"
    if counts.get(RunStatus.queued, 0):
        return "queued"
    return "finished"


def experiment_dict(session: Session, experiment_id: int) -> dict[str, Any]:
    """An experiment with its runs (and their recipes) and per-status counts."""
    exp = session.get(Experiment, experiment_id)
    if exp is None:
        raise LookupError(f"no experiment {experiment_id}")
    pairs = session.execute(
        select(Run, Recipe)
        .join(Recipe, Recipe.id == Run.recipe_id)
        .where(Run.experiment_id == experiment_id)
        .order_by(Run.id)
    ).all()
    runs = [run_dict(run, recipe) for run, recipe in pairs]
    counts = Counter(r["status"] for r in runs)
    return {
        "id": exp.id,
        "owner": exp.owner,
        "spec": exp.spec,
        "created_at": exp.created_at,
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
            "created_at": e.created_at,
            "status": _status_of(counts[e.id]),
            "counts": dict(counts[e.id]),
        }
        for e in exps
    ]


def run_queues(session: Session, run_ids: list[int]) -> dict[int, str]:
    """The queue (cpu|gpu) of each run id."""
    if not run_ids:
        return {}
    rows = session.execute(select(Run.id, Run.queue).where(Run.id.in_(run_ids)))
    return {int(row[0]): str(row[1]) for row in rows}
