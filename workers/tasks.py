"""Celery tasks ``optforge.train_run(run_id)`` and ``optforge.reap()``.

The message is only a wake-up call: ``train_run`` claims the run row atomically (a second
delivery finds nothing to claim and returns), renews a lease while training, writes the curve as
it goes and records the final result in one transaction (``workers.runs_db``). torch and the
trainer are imported inside the task, never in the worker's main process.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celery import shared_task
from sqlalchemy.exc import SQLAlchemyError

import core.broker  # module attribute lookups at call time: tests swap its senders
from core.db import is_transient, with_retry
from search.pruner import should_prune_run
from workers.launch import run_distributed
from workers.reaper import reap_once, release_run
from workers.runs_db import (
    Claim,
    CurveWriter,
    Lease,
    claim_run,
    fail_run,
    finish_run,
    new_owner,
    result_values,
)
from workers.train_types import RankFailure, RankJob

if TYPE_CHECKING:
    from workers.train import Callbacks, MetricPoint, TrainResult

log = logging.getLogger(__name__)


class RunCallbacks:
    """The trainer's callbacks for one attempt: curve, pruning hook, cooperative cancel."""

    def __init__(
        self, claim: Claim, lease: Lease, curve: CurveWriter, on_point: Any = None
    ) -> None:
        self.claim = claim
        self.lease = lease
        self.curve = curve
        self.on_point = on_point  # the CLI's progress bar (local runs), else None

    def on_step(self, point: MetricPoint) -> None:
        self.curve.add(point)
        if self.on_point is not None:
            self.on_point(point)

    def on_eval(self, point: MetricPoint) -> str:
        """Ask the study's pruner (the trainer already passed ``point`` to ``on_step``)."""
        if self.claim.trial_id is None or point.val_loss is None:
            return "continue"
        self.curve.flush()  # the pruner reads curves of the study from run_metrics
        run_id, step, val_loss = self.claim.run_id, point.step, point.val_loss
        prune = with_retry(lambda: should_prune_run(run_id, step, val_loss), f"pruner {run_id}")
        return "prune" if prune else "continue"

    def should_cancel(self) -> bool:
        return self.lease.should_stop()

    def trainer_callbacks(self) -> Callbacks:
        from workers.train import Callbacks  # torch: only inside the task

        return Callbacks(
            on_step=self.on_step, on_eval=self.on_eval, should_cancel=self.should_cancel
        )


def execute_run(run_id: int, owner: str | None = None, **local: Any) -> str:
    """Claim and train run ``run_id``; returns what happened (for logs and tests).

    ``local`` is for the CLI's recorded runs: ``device``, ``data_path`` (passed to
    ``run_workload``) and ``on_point`` (called with every curve point)."""
    claim = claim_run(run_id, owner or new_owner())
    if claim is None:
        log.info("train_run %s: nothing to claim (already taken, finished or cancelled)", run_id)
        return "skipped"
    with Lease(claim) as lease:
        curve = CurveWriter(claim, lease)
        outcome = _train(claim, lease, curve, **local)
    if outcome != "lost":
        _notify_owners(claim)
    log.info("train_run %s attempt %s: %s", run_id, claim.attempt, outcome)
    return outcome


def _notify_owners(claim: Claim) -> None:
    """Tick the study or benchmark the finished run belongs to (the reaper ticks them too)."""
    for owner_id, send in (
        (claim.study_id, core.broker.dispatch_study_tick),
        (claim.benchmark_id, core.broker.dispatch_benchmark_tick),
    ):
        if owner_id is None:
            continue
        try:
            send(owner_id)
        except Exception:  # noqa: BLE001 - the run is recorded; the reaper ticks them too
            log.warning("tick for %s %s not sent", send.__name__, owner_id, exc_info=True)


def _run(claim: Claim, callbacks: Callbacks, **local: Any) -> TrainResult:
    """Train in this process, or under torchrun when the run spans several processes."""
    from workers.train import run_workload  # torch: inside the task only

    if claim.gpus > 1:
        device = local.get("device") or ("cpu" if claim.queue == "cpu" else "cuda")
        job = RankJob(
            workload=claim.workload,
            recipe=claim.recipe,
            steps=claim.steps,
            seed=claim.seed,
            lr=claim.lr,
            warmup_frac=claim.warmup_frac,
            device=device,
            parallel=claim.parallel,  # type: ignore[arg-type]
            world_size=claim.gpus,
            data_path=str(local["data_path"]) if local.get("data_path") else None,
        )
        return run_distributed(job, callbacks)
    return run_workload(
        claim.workload,
        claim.recipe,
        steps=claim.steps,
        seed=claim.seed,
        lr=claim.lr,
        callbacks=callbacks,
        warmup_frac=claim.warmup_frac,
        **local,
    )


def _train(claim: Claim, lease: Lease, curve: CurveWriter, **local: Any) -> str:
    on_point = local.pop("on_point", None)
    callbacks = RunCallbacks(claim, lease, curve, on_point).trainer_callbacks()
    try:
        result = _run(claim, callbacks, **local)
        values = result_values(result, claim)
    except RankFailure as exc:  # not the recipe's fault: another attempt, as for a lost worker
        return _give_back(claim, exc)
    except Exception as exc:  # noqa: BLE001 - any trainer error is the run's failure reason
        if lease.lost.is_set():
            return "lost"
        if _database_error(exc):  # not the run's fault: its lease expires, the reaper retries
            log.error("run %s abandoned: database unavailable past the retry budget", claim.run_id)
            return "lost"
        log.exception("run %s failed", claim.run_id)
        return "failed" if fail_run(claim, exc, curve.take()) else "lost"
    if lease.lost.is_set():
        return "lost"
    if values["status"] == "cancelled" and not lease.cancelled.is_set():
        return "lost"
    return str(values["status"]) if finish_run(claim, values, curve.take()) else "lost"


def _give_back(claim: Claim, exc: RankFailure) -> str:
    """Queue the run again (or fail it once its attempts are spent) and send it."""
    reason = f"attempt {claim.attempt}: {exc}"[:2000]
    log.warning("run %s: a rank failed: %s", claim.run_id, exc)
    again = with_retry(lambda: release_run(claim.run_id, claim.owner, reason), "release")
    if again is None:
        return "failed"
    try:
        core.broker.dispatch_run(*again)
    except Exception:  # noqa: BLE001 - the reaper re-sends queued runs whose message is lost
        log.warning("re-dispatch of run %s failed (the reaper will resend)", claim.run_id)
    return "requeued"


def _database_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a transient database error."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if is_transient(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


CLAIM_RETRY_COUNTDOWN_S = 5


@shared_task(
    bind=True, name="optforge.train_run", acks_late=True, ignore_result=True, max_retries=None
)
def train_run(self: Any, run_id: int) -> str:
    """Train one run (message carries only its id; idempotent through the DB claim).

    A claim that cannot reach the database (after ``claim_run``'s own retries) is retried
    as a new message, never acked and lost; the reaper re-sends it should that fail too.
    """
    try:
        return execute_run(int(run_id))
    except SQLAlchemyError as exc:
        if not _database_error(exc):
            raise
        log.warning("train_run %s: database unavailable, retrying the message", run_id)
        raise self.retry(exc=exc, countdown=CLAIM_RETRY_COUNTDOWN_S) from exc


@shared_task(name="optforge.reap", acks_late=False, ignore_result=True)
def reap() -> dict[str, int]:
    """One reaper pass (workers also run it on their own timer)."""
    return reap_once()
