"""The central asker: one ``tick`` at a time per study tells Optuna and asks new trials.

``tick(study_id)`` (the Celery task ``optforge.study_tick``, the CLI and tests call it):

1. locks the study row (an UPDATE on it: a row lock on Postgres, the write lock on SQLite), so
   concurrent ticks serialise and parallel workers never get duplicate suggestions;
2. fails/re-queues stale runs (lease expired), bounded by ``settings.max_attempts``;
3. tells Optuna every trial whose runs are all terminal: value = mean over its seeds' runs;
   failed runs are retried as new runs up to ``spec.max_retries`` times, then (like diverged and
   cancelled runs) make the trial FAIL with the reason; pruned runs make it PRUNED at their step;
4. asks new trials until ``parallelism`` are in flight or ``n_trials`` exist, creating Run rows
   (an identical recipe+workload+steps+seed+lr already evaluated reuses the stored result);
5. marks the study completed when all ``n_trials`` are terminal, COMMITs, then dispatches.

References: services.md §2.2 (central asker), §2.4 (stale trials), §2.5 (global budget by a DB
count, not MaxTrialsCallback).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from core.models import (
    TERMINAL_STATUSES,
    Recipe,
    Run,
    RunStatus,
    SearchStudy,
    SearchTrial,
    StudyStatus,
    TrialStatus,
)
from search.space import DesignSpace, params_to_design
from search.spec import StudySpec

Dispatch = Callable[[int], None]
__all__ = ["StudySpec", "cancel_study", "create_study", "progress", "tick"]


# --------------------------------------------------------------------------------------------
# creating, cancelling
# --------------------------------------------------------------------------------------------


def create_study(session: Session, spec: StudySpec, owner: str | None = None) -> SearchStudy:
    """Validate ``spec`` (space, objectives, sampler, limits) and insert the study row."""
    from core.config import get_settings
    from search.study import SAMPLERS, check_objectives

    settings = get_settings()
    spec.design_space()  # raises SpaceError on an invalid space
    check_objectives(spec.objectives)
    if spec.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {spec.sampler!r}; allowed: {list(SAMPLERS)}")
    if spec.n_trials > settings.max_trials or spec.parallelism > settings.max_parallelism:
        raise ValueError("n_trials/parallelism exceed the service limits")
    if spec.steps > settings.max_steps or len(spec.seeds) > settings.max_seeds:
        raise ValueError("steps/seeds exceed the service limits")
    _check_workload(spec.workload)
    name = spec.name or f"study-{uuid.uuid4().hex[:8]}"
    row = SearchStudy(
        name=name,
        spec=spec.model_dump(mode="json"),
        optuna_study_name=f"optforge-{uuid.uuid4().hex}",
        workload=spec.workload,
        steps=spec.steps,
        status=StudyStatus.running,
        n_trials=spec.n_trials,
        parallelism=spec.parallelism,
        sampler=spec.sampler,
        seed=spec.seed,
        owner=owner,
    )
    session.add(row)
    session.flush()
    return row


def _check_workload(name: str) -> None:
    try:
        from core.workloads import get_workload
    except ImportError:  # catalog not installed yet: the worker validates
        return
    get_workload(name)


def cancel_study(session: Session, study_id: int) -> SearchStudy:
    """Cancel: queued runs cancelled, running runs asked to stop, running trials failed."""
    study = _lock(session, study_id)
    if study.status != StudyStatus.running:
        return study
    opt = _optuna(study, len(study.trials))
    from search import study as ostudy

    for trial in study.trials:
        if trial.status != TrialStatus.running:
            continue
        for run in trial.runs:
            if run.status == RunStatus.queued:
                run.status = RunStatus.cancelled
                run.finished_at = _now()
            elif run.status == RunStatus.running:
                run.cancel_requested = True
        _finish(trial, TrialStatus.failed, reason="study cancelled")
        ostudy.tell(opt, trial.number, "failed", reason="study cancelled")
    study.status = StudyStatus.cancelled
    study.finished_at = _now()
    return study


# --------------------------------------------------------------------------------------------
# tick
# --------------------------------------------------------------------------------------------


def tick(
    study_id: int, dispatch: Dispatch | None = None, url: str | None = None
) -> dict[str, int]:
    """One scheduling step for a study (see module docstring); returns progress counts."""
    from core.db import session_scope

    send = dispatch or default_dispatch
    for _ in range(1000):  # repeat while reused results finished trials (no worker will tick)
        with session_scope(url) as session:
            to_dispatch, again = tick_in_session(session, study_id)
            counts = progress(session, study_id)
        for run_id in to_dispatch:
            send(run_id)
        if not again:
            break
    return counts


def tick_in_session(session: Session, study_id: int) -> tuple[list[int], bool]:
    """The locked part of :func:`tick`: (run ids to dispatch after the commit, tick again?).

    Trials whose runs were all reused are told on the *next* tick, exactly as if a worker had
    finished them, so a replayed study sees the same history at every ask.
    """
    from search import study as ostudy

    study = _lock(session, study_id)
    if study.status != StudyStatus.running:
        return [], False
    spec = StudySpec.model_validate(study.spec)
    space = spec.design_space()
    trials = list(study.trials)
    opt = _optuna(study, len(trials))
    ostudy.fail_orphans(opt, {t.number for t in trials})
    dispatch = _requeue_stale(session, trials)
    dispatch += _tell_finished(session, study, spec, trials, opt)
    again = False
    while (
        sum(t.status == TrialStatus.running for t in trials) < study.parallelism
        and len(trials) < study.n_trials
    ):
        ostudy.reseed(opt, study.sampler, study.seed, len(trials))
        trial, new_runs = _ask_one(session, study, spec, space, opt)
        trials.append(trial)
        dispatch += [r.id for r in new_runs if r.status == RunStatus.queued]
        again = again or all(r.status in TERMINAL_STATUSES for r in new_runs)
    if len(trials) >= study.n_trials and all(t.status != TrialStatus.running for t in trials):
        study.status = StudyStatus.completed
        study.finished_at = _now()
    session.flush()
    return dispatch, again


def _lock(session: Session, study_id: int) -> SearchStudy:
    # An UPDATE takes a row lock on Postgres and the database write lock on SQLite, so two
    # ticks of one study never interleave (SELECT ... FOR UPDATE is a no-op on SQLite).
    result = session.execute(
        update(SearchStudy).where(SearchStudy.id == study_id).values(status=SearchStudy.status)
    )
    if _rowcount(result) == 0:
        raise LookupError(f"no study {study_id}")
    study = session.scalars(
        select(SearchStudy)
        .where(SearchStudy.id == study_id)
        .options(selectinload(SearchStudy.trials).selectinload(SearchTrial.runs))
        .execution_options(populate_existing=True)
    ).one()
    return study


def _rowcount(result: Any) -> int:
    """Rows matched by an UPDATE (a CursorResult)."""
    return int(result.rowcount)


def _optuna(study: SearchStudy, n_asked: int) -> Any:
    from search import study as ostudy

    spec = study.spec
    return ostudy.open_study(
        study.optuna_study_name,
        spec.get("objectives") or [],
        sampler=study.sampler,
        seed=study.seed,
        n_asked=n_asked,
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _requeue_stale(session: Session, trials: Iterable[SearchTrial]) -> list[int]:
    """Runs whose lease expired (worker killed): re-queue (bounded) or fail them."""
    from core.config import get_settings

    settings = get_settings()
    grace = timedelta(seconds=settings.lease_seconds)
    now = _now()
    out: list[int] = []
    for trial in trials:
        for run in trial.runs:
            expires = _aware(run.lease_expires_at)
            if run.status != RunStatus.running or expires is None or expires + grace > now:
                continue
            claimed = _rowcount(
                session.execute(
                    update(Run)
                    .where(Run.id == run.id, Run.status == RunStatus.running)
                    .values(status=RunStatus.queued, lease_owner=None, lease_expires_at=None)
                )
            )
            if not claimed:
                continue
            session.refresh(run)
            if run.attempts >= settings.max_attempts:
                run.status = RunStatus.failed
                run.failure_reason = f"lease expired {run.attempts} times (worker lost)"
                run.finished_at = now
            else:
                out.append(run.id)
    return out


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def trial_values(spec: StudySpec, runs: list[Run]) -> list[float] | None:
    """Objective values of a trial: means over its seeds' succeeded runs (None = unusable)."""
    out: list[float] = []
    for obj in spec.objectives:
        if obj == "steps_to_target":
            # censored: a run that never reached the target counts as 2 x steps
            vals: list[float | None] = [
                float(r.steps_to_target) if r.steps_to_target is not None else 2.0 * r.steps
                for r in runs
            ]
        else:
            column = "final_val_loss" if obj == "val_loss" else obj
            vals = [getattr(r, column) for r in runs]
        value = _mean(vals)
        if value is None or not math.isfinite(value):
            return None
        out.append(value)
    return out


def _tell_finished(
    session: Session, study: SearchStudy, spec: StudySpec, trials: list[SearchTrial], opt: Any
) -> list[int]:
    from search import study as ostudy

    dispatch: list[int] = []
    for trial in trials:
        runs = [r for r in trial.runs if not _superseded(r, trial.runs)]
        if trial.status != TrialStatus.running or not runs:
            continue
        if any(r.status not in TERMINAL_STATUSES for r in runs):
            continue
        failed = [r for r in runs if r.status == RunStatus.failed]
        if failed and trial.attempts <= spec.max_retries:
            trial.attempts += 1
            for r in failed:
                dispatch.append(_new_run(session, trial, r.recipe_id, spec, r.seed, r.lr).id)
            continue
        _decide_trial(trial, runs, spec, opt, ostudy)
    return dispatch


def _superseded(run: Run, runs: list[Run]) -> bool:
    """A failed run that a later retry of the same seed replaced."""
    return run.status == RunStatus.failed and any(
        o.seed == run.seed and o.id > run.id for o in runs
    )


def _decide_trial(trial: SearchTrial, runs: list[Run], spec: StudySpec, opt: Any, ostudy) -> None:  # type: ignore[no-untyped-def]
    bad = [
        r for r in runs if r.status in (RunStatus.failed, RunStatus.diverged, RunStatus.cancelled)
    ]
    pruned = [r for r in runs if r.status == RunStatus.pruned]
    if bad:
        r = bad[0]
        reason = f"run {r.id} {r.status}" + (f": {r.failure_reason}" if r.failure_reason else "")
        if r.stopped_step is not None:
            reason += f" (step {r.stopped_step})"
        _finish(trial, TrialStatus.failed, reason=reason)
        ostudy.tell(opt, trial.number, "failed", reason=reason)
        return
    if pruned:
        step = min(r.stopped_step or 0 for r in pruned)
        _finish(trial, TrialStatus.pruned, reason=f"pruned at step {step}")
        trial.pruned_step = step
        ostudy.tell(opt, trial.number, "pruned")
        return
    values = trial_values(spec, runs)
    if values is None:
        _finish(trial, TrialStatus.failed, reason="no finite objective value")
        ostudy.tell(opt, trial.number, "failed", reason="no finite objective value")
        return
    constraint = None
    if spec.max_state_bytes_per_param is not None:
        sbpp = _mean([r.state_bytes_per_param for r in runs])
        if sbpp is not None:
            constraint = sbpp - spec.max_state_bytes_per_param
    trial.values = values
    _finish(trial, TrialStatus.complete)
    ostudy.tell(opt, trial.number, "complete", values=values, constraint=constraint)


def _finish(trial: SearchTrial, status: TrialStatus, reason: str | None = None) -> None:
    trial.status = status
    trial.failure_reason = reason
    trial.finished_at = _now()


# --------------------------------------------------------------------------------------------
# asking and run rows
# --------------------------------------------------------------------------------------------


def _ask_one(
    session: Session, study: SearchStudy, spec: StudySpec, space: DesignSpace, opt: Any
) -> tuple[SearchTrial, list[Run]]:
    from search import study as ostudy

    number, params = ostudy.ask(opt, space)
    design = params_to_design(params, space)
    recipe = upsert_recipe(session, design)
    trial = SearchTrial(
        study_id=study.id, number=number, recipe_id=recipe.id, params=params, attempts=1
    )
    session.add(trial)
    session.flush()
    runs = [_new_run(session, trial, recipe.id, spec, seed, design["lr"]) for seed in spec.seeds]
    session.refresh(trial, ["runs"])
    return trial, runs


def _new_run(
    session: Session, trial: SearchTrial, recipe_id: int, spec: StudySpec, seed: int, lr: float
) -> Run:
    """A queued run, or a succeeded copy of an identical stored result (``reused_from_id``)."""
    prior = session.scalars(
        select(Run)
        .where(
            Run.recipe_id == recipe_id,
            Run.workload == spec.workload,
            Run.steps == spec.steps,
            Run.seed == seed,
            Run.lr == lr,
            Run.status == RunStatus.succeeded,
        )
        .order_by(Run.id)
        .limit(1)
    ).first()
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
    if prior is not None:
        for col in _RESULT_COLUMNS:
            setattr(run, col, getattr(prior, col))
        run.status = RunStatus.succeeded
        run.reused_from_id = prior.reused_from_id or prior.id
        run.finished_at = _now()
    session.add(run)
    session.flush()
    return run


_RESULT_COLUMNS = (
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
    "env",
)


def recipe_identity(design: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(hash, canonical) of a recipe dict: optim_core's when available, else sha256 of JSON."""
    try:
        import optim_core

        recipe_cls = optim_core.Recipe  # type: ignore[attr-defined]
    except (ImportError, AttributeError):  # optim_core not there yet: same canonical JSON idea
        recipe_cls = None
    if recipe_cls is not None:
        recipe = recipe_cls.model_validate(design)
        return recipe.hash(), recipe.canonical()
    else:
        canonical = json.loads(json.dumps(design, sort_keys=True))
        digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
        return digest[:32], canonical


def upsert_recipe(session: Session, design: dict[str, Any]) -> Recipe:
    """The recipe row for ``design`` (equal recipes share one row)."""
    digest, canonical = recipe_identity(design)
    row = session.scalars(select(Recipe).where(Recipe.hash == digest)).first()
    if row is None:
        row = Recipe(hash=digest, canonical=canonical)
        session.add(row)
        session.flush()
    return row


def default_dispatch(run_id: int) -> None:
    """Send ``optforge.train_run`` by name through the service's broker."""
    try:
        from core.broker import dispatch_run
    except ImportError:
        from core.broker import get_celery_client  # type: ignore[attr-defined]

        get_celery_client().send_task("optforge.train_run", args=[run_id])
        return
    dispatch_run(run_id)


# --------------------------------------------------------------------------------------------
# read side
# --------------------------------------------------------------------------------------------


def progress(session: Session, study_id: int) -> dict[str, int]:
    """Counts of a study's trials by status, plus n_trials."""
    study = session.get(SearchStudy, study_id)
    if study is None:
        raise LookupError(f"no study {study_id}")
    rows = session.scalars(select(SearchTrial.status).where(SearchTrial.study_id == study_id))
    counts = {s.value: 0 for s in TrialStatus}
    for status in rows:
        counts[status] = counts.get(status, 0) + 1
    counts["n_trials"] = study.n_trials
    counts["asked"] = sum(counts[s.value] for s in TrialStatus)
    return counts
