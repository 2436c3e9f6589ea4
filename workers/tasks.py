"""Celery tasks ``optforge.train_run(run_id)`` and ``optforge.reap()``.

The message is only a wake-up call: ``train_run`` claims the run row atomically (a second
delivery finds nothing to claim and returns), renews a lease while training, writes the curve as
it goes and records the final result in one transaction (``workers.runs_db``). torch and the
trainer are imported inside the task, never in the worker's main process.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from celery import shared_task

from workers.runs_db import (
    Claim,
    CurveWriter,
    Lease,
    claim_run,
    fail_run,
    finish_run,
    new_owner,
    result_values,
    set_memory_estimate,
)

if TYPE_CHECKING:
    from workers.train import Callbacks, MetricPoint

log = logging.getLogger(__name__)


class RunCallbacks:
    """The trainer's callbacks for one attempt: curve, pruning hook, cooperative cancel."""

    def __init__(self, claim: Claim, lease: Lease, curve: CurveWriter) -> None:
        self.claim = claim
        self.lease = lease
        self.curve = curve

    def on_step(self, point: MetricPoint) -> None:
        self.curve.add(point)

    def on_eval(self, point: MetricPoint) -> str:
        """Ask the study's pruner (the trainer already passed ``point`` to ``on_step``)."""
        if self.claim.trial_id is None or point.val_loss is None:
            return "continue"
        self.curve.flush()  # the pruner reads curves of the study from run_metrics
        from search.pruner import should_prune_run

        if should_prune_run(self.claim.run_id, point.step, point.val_loss):
            return "prune"
        return "continue"

    def should_cancel(self) -> bool:
        return self.lease.should_stop()

    def trainer_callbacks(self) -> Callbacks:
        from workers.train import Callbacks  # torch: only inside the task

        return Callbacks(
            on_step=self.on_step, on_eval=self.on_eval, should_cancel=self.should_cancel
        )


def _estimate_memory(claim: Claim) -> None:
    """Analytical state bytes on the row before training (used by the pruner's memory classes)."""
    try:
        from search.recipes import validate_recipe

        info = validate_recipe(claim.recipe, workload=claim.workload)
        if info.get("state_bytes") is not None and info.get("n_params"):
            set_memory_estimate(claim, int(info["state_bytes"]), int(info["n_params"]))
    except Exception:  # noqa: BLE001 - an estimate only; the trainer measures the real value
        log.warning("no state-bytes estimate for run %s", claim.run_id, exc_info=True)


def execute_run(run_id: int, owner: str | None = None) -> str:
    """Claim and train run ``run_id``; returns what happened (for logs and tests)."""
    claim = claim_run(run_id, owner or new_owner())
    if claim is None:
        log.info("train_run %s: nothing to claim (already taken, finished or cancelled)", run_id)
        return "skipped"
    if claim.trial_id is not None:
        _estimate_memory(claim)
    with Lease(claim) as lease:
        curve = CurveWriter(claim, lease)
        outcome = _train(claim, lease, curve)
    if outcome != "lost" and claim.study_id is not None:
        from core.broker import dispatch_study_tick

        try:
            dispatch_study_tick(claim.study_id)
        except Exception:  # noqa: BLE001 - the run is recorded; the reaper ticks studies too
            log.warning("study_tick for study %s not sent", claim.study_id, exc_info=True)
    log.info("train_run %s attempt %s: %s", run_id, claim.attempt, outcome)
    return outcome


def _train(claim: Claim, lease: Lease, curve: CurveWriter) -> str:
    from workers.train import run_workload

    callbacks = RunCallbacks(claim, lease, curve).trainer_callbacks()
    try:
        result = run_workload(
            claim.workload,
            claim.recipe,
            steps=claim.steps,
            seed=claim.seed,
            lr=claim.lr,
            callbacks=callbacks,
        )
        values = result_values(result, claim)
    except Exception as exc:  # noqa: BLE001 - any trainer error is the run's failure reason
        if lease.lost.is_set():
            return "lost"
        log.exception("run %s failed", claim.run_id)
        return "failed" if fail_run(claim, exc, curve.take()) else "lost"
    if lease.lost.is_set():
        return "lost"
    if values["status"] == "cancelled" and not lease.cancelled.is_set():
        return "lost"
    return str(values["status"]) if finish_run(claim, values, curve.take()) else "lost"


@shared_task(name="optforge.train_run", acks_late=True, ignore_result=True)
def train_run(run_id: int) -> str:
    """Train one run (message carries only its id; idempotent through the DB claim)."""
    return execute_run(int(run_id))


@shared_task(name="optforge.reap", acks_late=False, ignore_result=True)
def reap() -> dict[str, int]:
    """One reaper pass (workers also run it on their own timer)."""
    from workers.reaper import reap_once

    return reap_once()
