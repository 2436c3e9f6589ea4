"""The central asker: one ``tick`` at a time per study tells Optuna and asks new trials.

``tick(study_id)`` (the Celery task ``optforge.study_tick``, the CLI and tests call it):

1. locks the study row (an UPDATE on it: a row lock on Postgres, the write lock on SQLite), so
   concurrent ticks serialise and parallel workers never get duplicate suggestions;
2. re-queues runs whose lease expired (worker killed), bounded by ``settings.max_attempts``;
3. tells Optuna every trial whose runs are all terminal (search/outcomes.py): failed runs are
   retried ``spec.max_retries`` times, then failed/diverged/cancelled runs make the trial FAIL
   with the reason; pruned runs make it PRUNED at their step; else COMPLETE with the mean values;
4. asks new trials until ``parallelism`` are in flight or ``n_trials`` exist, creating Run rows
   (an identical recipe+workload+steps+seed+lr already evaluated reuses the stored result);
5. marks the study completed when all ``n_trials`` are terminal, COMMITs, then dispatches.

The sampler is re-seeded before every ask from (study seed, number of trials asked), so the same
seed and the same order of results replay the same sequence of recipes.

References: services.md §2.2 (central asker), §2.4 (stale trials), §2.5 (global budget by a DB
count, not MaxTrialsCallback).
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from sqlalchemy.orm import Session, selectinload

from core.errors import NotFound
from core.models import (
    TERMINAL_STATUSES,
    Run,
    RunStatus,
    SearchStudy,
    SearchTrial,
    StudyStatus,
    TrialStatus,
)
from records.runs import cancel_runs
from search.outcomes import current_runs, finish, tell_finished, trial_values
from search.space import DesignSpace
from search.spec import StudySpec, StudySpecError
from search.study_view import progress
from search.suggest import params_to_design
from search.trial_runs import (
    Dispatch,
    default_dispatch,
    lock_row,
    new_run,
    now,
    repeat_ticks,
    requeue_stale,
    stale,
    upsert_recipe,
)

__all__ = [
    "StudySpec",
    "cancel_study",
    "create_study",
    "default_dispatch",
    "progress",
    "tick",
    "tick_in_session",
    "trial_values",
]


# --------------------------------------------------------------------------------------------
# creating, cancelling
# --------------------------------------------------------------------------------------------


def create_study(session: Session, spec: StudySpec, owner: str | None = None) -> SearchStudy:
    """Validate ``spec`` (space, objectives, sampler, limits) and insert the study row."""
    spec.design_space()  # raises SpaceError on an invalid space
    _check_search(spec)
    _check_limits(spec)
    _check_workload(spec.workload, spec.steps, spec.queue)
    row = SearchStudy(
        name=spec.name or f"study-{uuid.uuid4().hex[:8]}",
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


def _check_search(spec: StudySpec) -> None:
    """Objectives and sampler are ones Optuna's side knows (StudySpecError otherwise)."""
    from search.study import SAMPLERS, check_objectives

    try:
        check_objectives(spec.objectives)
    except ValueError as exc:
        raise StudySpecError(str(exc), "objectives") from exc
    if spec.sampler not in SAMPLERS:
        raise StudySpecError(
            f"unknown sampler {spec.sampler!r}; allowed: {list(SAMPLERS)}", "sampler"
        )


def _check_limits(spec: StudySpec) -> None:
    """Trials, parallelism, steps and seeds within the service's caps (Settings)."""
    from core.config import get_settings

    settings = get_settings()
    limits = [
        ("n_trials", spec.n_trials, settings.max_trials),
        ("parallelism", spec.parallelism, settings.max_parallelism),
        ("steps", spec.steps, settings.max_steps),
        ("seeds", len(spec.seeds), settings.max_seeds),
    ]
    for field, value, limit in limits:
        if value > limit:
            raise StudySpecError(f"{field} {value} exceeds the service limit {limit}", field)


def _check_workload(name: str, steps: int, queue: str) -> None:
    from core.workloads import get_workload

    try:
        workload = get_workload(name)
    except NotFound as exc:
        raise StudySpecError(str(exc), "workload") from exc
    if steps > workload.max_steps:
        raise StudySpecError(
            f"steps {steps} exceeds workload {name}'s max_steps {workload.max_steps}", "steps"
        )
    if workload.gpu_only and queue != "gpu":  # like experiments: no GPU-sized runs on cpu
        raise StudySpecError(f"workload {name!r} is GPU-sized: queue must be 'gpu'", "queue")


def cancel_study(session: Session, study_id: int) -> SearchStudy:
    """Cancel: queued runs cancelled, running runs asked to stop, running trials failed."""
    from search import study as ostudy

    study = _lock(session, study_id)
    if study.status != StudyStatus.running:
        return study
    opt = _optuna(study, len(study.trials))
    running = [t for t in study.trials if t.status == TrialStatus.running]
    cancel_runs(session, Run.trial_id.in_([t.id for t in running]))
    for trial in running:
        finish(trial, TrialStatus.failed, reason="study cancelled")
        ostudy.tell(opt, trial.number, "failed", reason="study cancelled")
    study.status = StudyStatus.cancelled
    study.finished_at = now()
    return study


# --------------------------------------------------------------------------------------------
# tick
# --------------------------------------------------------------------------------------------


def tick(
    study_id: int, dispatch: Dispatch | None = None, url: str | None = None
) -> dict[str, int]:
    """One scheduling step for a study (see module docstring); returns progress counts."""
    return repeat_ticks(partial(_tick_once, study_id, url), dispatch)


def _tick_once(study_id: int, url: str | None) -> tuple[list[int], bool, str, dict[str, int]]:
    from core.db import session_scope

    with session_scope(url) as session:
        to_dispatch, again = tick_in_session(session, study_id)
        return to_dispatch, again, _queue_of(session, study_id), progress(session, study_id)


def _queue_of(session: Session, study_id: int) -> str:
    study = session.get(SearchStudy, study_id)
    return str((study.spec or {}).get("queue") or "cpu") if study else "cpu"


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
    trials = list(study.trials)
    if not _work_to_do(study, trials):
        return [], False  # a redundant tick (reaper, duplicate message): no Optuna round-trip
    space = spec.design_space()
    opt = _optuna(study, len(trials))
    ostudy.fail_orphans(opt, {t.number for t in trials})
    dispatch = requeue_stale(session, trials)
    dispatch += tell_finished(session, spec, trials, opt)
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
        study.finished_at = now()
    session.flush()
    return dispatch, again


def _work_to_do(study: SearchStudy, trials: list[SearchTrial]) -> bool:
    """Whether a tick has anything to tell, ask, re-queue or close (else it is a no-op)."""
    running = [t for t in trials if t.status == TrialStatus.running]
    if len(running) < study.parallelism and len(trials) < study.n_trials:
        return True  # room to ask
    if not running:
        return True  # all asked and decided: close the study
    for trial in running:
        runs = current_runs(trial)
        if not runs or all(r.status in TERMINAL_STATUSES for r in runs):
            return True  # a trial to tell (or retry)
        if any(stale(r) for r in runs):
            return True  # a lost worker's run to re-queue
    return False


def _lock(session: Session, study_id: int) -> SearchStudy:
    runs = selectinload(SearchStudy.trials).selectinload(SearchTrial.runs)
    study: SearchStudy = lock_row(session, SearchStudy, study_id, "study", runs)
    return study


def _optuna(study: SearchStudy, n_asked: int) -> Any:
    from search import study as ostudy

    return ostudy.open_study(
        study.optuna_study_name,
        (study.spec or {}).get("objectives") or [],
        sampler=study.sampler,
        seed=study.seed,
        n_asked=n_asked,
    )


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
    runs = [new_run(session, trial, recipe.id, spec, seed, design["lr"]) for seed in spec.seeds]
    session.refresh(trial, ["runs"])
    return trial, runs
