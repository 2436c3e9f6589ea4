"""From a trial's runs to its Optuna outcome (the "tell" half of the central asker).

A trial is decided once all its current runs are terminal:

* a ``failed`` run (worker crash, lease lost too often) is retried as a new run of the same seed
  while ``trial.attempts <= spec.max_retries``; after that the trial FAILs with the reason;
* ``diverged`` / ``cancelled`` runs make the trial FAIL with the reason (and the step);
* a ``pruned`` run makes the trial PRUNED at its ``stopped_step``;
* otherwise the trial is COMPLETE with values = means over its seeds' runs, plus the
  ``max_state_bytes_per_param`` constraint when the study has one.

Every tell goes through :func:`search.study.tell`, which skips finished trials, so re-telling
after a lost commit is harmless.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from core.models import TERMINAL_STATUSES, Run, RunStatus, SearchTrial, TrialStatus
from search.spec import StudySpec
from search.trial_runs import new_run, now

_BAD = (RunStatus.failed, RunStatus.diverged, RunStatus.cancelled)


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


def current_runs(trial: SearchTrial) -> list[Run]:
    """The trial's runs without failed ones that a later retry of the same seed replaced."""
    return [r for r in trial.runs if not _superseded(r, trial.runs)]


def _superseded(run: Run, runs: list[Run]) -> bool:
    return run.status == RunStatus.failed and any(
        o.seed == run.seed and o.id > run.id for o in runs
    )


def tell_finished(
    session: Session, spec: StudySpec, trials: list[SearchTrial], opt: Any
) -> list[int]:
    """Decide every running trial whose runs are all terminal; returns retry runs to dispatch."""
    dispatch: list[int] = []
    for trial in trials:
        runs = current_runs(trial)
        if trial.status != TrialStatus.running or not runs:
            continue
        if any(r.status not in TERMINAL_STATUSES for r in runs):
            continue
        failed = [r for r in runs if r.status == RunStatus.failed]
        if failed and trial.attempts <= spec.max_retries:
            trial.attempts += 1
            for r in failed:
                retry = new_run(session, trial, r.recipe_id, spec, r.seed, r.lr)
                if retry.status == RunStatus.queued:
                    dispatch.append(retry.id)
            continue
        decide_trial(trial, runs, spec, opt)
    return dispatch


def _failure_reason(run: Run) -> str:
    reason = f"run {run.id} {run.status}"
    if run.failure_reason:
        reason += f": {run.failure_reason}"
    if run.stopped_step is not None:
        reason += f" (step {run.stopped_step})"
    return reason


def decide_trial(trial: SearchTrial, runs: list[Run], spec: StudySpec, opt: Any) -> None:
    """Record the trial's outcome in our row and in Optuna (all runs terminal)."""
    from search import study as ostudy
    from search.trial_report import trial_report

    extra = trial_report(trial, runs)  # learning curve and run/recipe links for the dashboard
    bad = [r for r in runs if r.status in _BAD]
    pruned = [r for r in runs if r.status == RunStatus.pruned]
    if bad:
        reason = _failure_reason(bad[0])
        finish(trial, TrialStatus.failed, reason=reason)
        ostudy.tell(opt, trial.number, "failed", reason=reason, **extra)
        return
    if pruned:
        step = min(r.stopped_step or 0 for r in pruned)
        finish(trial, TrialStatus.pruned, reason=f"pruned at step {step}")
        trial.pruned_step = step
        ostudy.tell(opt, trial.number, "pruned", step=step, **extra)
        return
    values = trial_values(spec, runs)
    if values is None:
        finish(trial, TrialStatus.failed, reason="no finite objective value")
        ostudy.tell(opt, trial.number, "failed", reason="no finite objective value", **extra)
        return
    constraint = None
    if spec.max_state_bytes_per_param is not None:
        sbpp = _mean([r.state_bytes_per_param for r in runs])
        if sbpp is not None:
            constraint = sbpp - spec.max_state_bytes_per_param
    trial.values = values
    finish(trial, TrialStatus.complete)
    ostudy.tell(opt, trial.number, "complete", values=values, constraint=constraint, **extra)


def finish(trial: SearchTrial, status: TrialStatus, reason: str | None = None) -> None:
    trial.status = status
    trial.failure_reason = reason
    trial.finished_at = now()
