"""Run rows of study trials: recipe rows, new runs (reusing stored results), stale leases.

Used by the central asker (search/scheduler.py). A trial is evaluated by one run per seed; a run
whose recipe + workload + steps + seed + lr already succeeded is not trained again: it is inserted
as a ``succeeded`` copy with ``reused_from_id`` pointing at the original.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db import aware, rowcount
from core.errors import NotFound
from core.models import Recipe, Run, RunStatus, SearchTrial
from records.recipes import RecipeError, state_bytes_on
from records.reuse import reuse_if_stored, upsert_recipe_row
from search.spec import StudySpec

Dispatch = Callable[[int], None]
#: One scheduling step in its own transaction: (run ids to send once it committed, whether to
#: step again, the queue of those runs, the progress counts).
TickOnce = Callable[[], tuple[list[int], bool, str, dict[str, int]]]


def now() -> datetime:
    return datetime.now(UTC)


def lock_row(session: Session, model: Any, row_id: int, noun: str, *options: Any) -> Any:
    """Lock row ``row_id`` of ``model`` (a table with ``status``) and load it fresh.

    An UPDATE takes a row lock on Postgres and the database write lock on SQLite, so two
    scheduler ticks of one study or benchmark never interleave (SELECT ... FOR UPDATE is a
    no-op on SQLite). Raises NotFound ("no <noun> <id>") when the row does not exist.
    """
    result = session.execute(update(model).where(model.id == row_id).values(status=model.status))
    if rowcount(result) == 0:
        raise NotFound(f"no {noun} {row_id}")
    return session.scalars(
        select(model)
        .where(model.id == row_id)
        .options(*options)
        .execution_options(populate_existing=True)
    ).one()


# --------------------------------------------------------------------------------------------
# recipes
# --------------------------------------------------------------------------------------------


def recipe_identity(design: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(hash, canonical) of a recipe dict, as optim_core defines them."""
    import optim_core

    recipe = optim_core.Recipe.model_validate(design)
    return recipe.hash(), recipe.canonical()


def upsert_recipe(session: Session, design: dict[str, Any]) -> Recipe:
    """The recipe row for ``design`` (equal recipes share one row)."""
    digest, canonical = recipe_identity(design)
    return upsert_recipe_row(session, None, canonical, digest)


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------


def new_run(
    session: Session, trial: SearchTrial, recipe_id: int, spec: StudySpec, seed: int, lr: float
) -> Run:
    """A queued run, or a succeeded copy of an identical stored result (``reused_from_id``).

    A queued run carries the analytical state bytes of its recipe on the workload's model from
    the start (the pruner compares runs of one memory class); training overwrites them with
    the measured values."""
    run = Run(
        trial_id=trial.id,
        recipe_id=recipe_id,
        workload=spec.workload,
        steps=spec.steps,
        seed=seed,
        lr=lr,
        queue=spec.queue,
        status=RunStatus.queued,
    )
    if not reuse_if_stored(session, run):
        estimate_memory(run, session.get_one(Recipe, recipe_id).canonical)
    session.add(run)
    session.flush()
    return run


def estimate_memory(run: Run, canonical: dict[str, Any]) -> None:
    """``state_bytes``, ``n_params`` and ``state_bytes_per_param`` of ``run`` before training
    (analytical; left empty for a recipe that does not fit the workload)."""
    from core.workloads import get_workload

    spec = get_workload(run.workload)
    try:
        state = state_bytes_on(canonical, spec)
    except RecipeError:
        return
    run.state_bytes, run.n_params = state, spec.n_params
    run.state_bytes_per_param = state / max(spec.n_params, 1)


def stale(run: Run) -> bool:
    """A running run whose lease expired more than a lease period ago (its worker is lost).

    The grace period lets the reaper (which acts at expiry) go first and keeps a worker that
    renewed late from being mistaken for a lost one.
    """
    from core.config import get_settings

    expires = aware(run.lease_expires_at)
    if run.status != RunStatus.running or expires is None:
        return False
    return expires + timedelta(seconds=get_settings().lease_seconds) < now()


def requeue_stale(session: Session, trials: Iterable[SearchTrial]) -> list[int]:
    """Runs of lost workers (see :func:`stale`): re-queue them (bounded) or fail them.

    The reaper does the same for every run; doing it here too means a study never depends on
    the reaper. Both use a guarded UPDATE, so only one of them acts on a run.
    """
    from core.config import get_settings

    max_attempts = get_settings().max_attempts
    out: list[int] = []
    for trial in trials:
        for run in [r for r in trial.runs if stale(r)]:
            moved = rowcount(
                session.execute(
                    update(Run)
                    .where(Run.id == run.id, Run.status == RunStatus.running)
                    .where(Run.lease_expires_at == run.lease_expires_at)
                    .values(status=RunStatus.queued, lease_owner=None, lease_expires_at=None)
                )
            )
            if not moved:
                continue
            session.refresh(run)
            if run.attempts >= max_attempts:
                run.status = RunStatus.failed
                run.failure_reason = f"lease expired {run.attempts} times (worker lost)"
                run.finished_at = now()
            else:
                out.append(run.id)
    return out


def default_dispatch(run_id: int, queue: str = "cpu") -> None:
    """Send ``optforge.train_run`` by name through the service's broker."""
    from core.broker import dispatch_run

    dispatch_run(run_id, queue)


def repeat_ticks(tick_once: TickOnce, dispatch: Dispatch | None) -> dict[str, int]:
    """Run ``tick_once`` and send the runs it queued (by ``dispatch``, else by name to their
    queue), again while reused results finished trials (no worker will tick for those);
    returns the last progress counts."""
    counts: dict[str, int] = {}
    for _ in range(1000):
        to_dispatch, again, queue, counts = tick_once()
        send = dispatch or partial(default_dispatch, queue=queue)
        for run_id in to_dispatch:
            send(run_id)
        if not again:
            break
    return counts
