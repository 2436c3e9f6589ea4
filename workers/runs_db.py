"""Database side of one training attempt: claim, lease, curve, final result (no torch here).

Every write after the claim is guarded by ``lease_owner`` and ``status='running'``, so an
attempt whose lease the reaper took back can never overwrite the attempt that replaced it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.config import get_settings
from core.db import is_transient, rowcount, session_scope, with_retry
from core.models import (
    METRIC_COLUMNS,
    BenchmarkCell,
    Recipe,
    Run,
    RunMetric,
    RunStatus,
    SearchTrial,
)

log = logging.getLogger(__name__)

METRIC_FIELDS = ("tokens", "elapsed_s", "train_loss", "val_loss", "lr")
RESULT_STATUSES = {"succeeded", "diverged", "cancelled", "pruned", "failed"}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_owner() -> str:
    """A lease owner id unique to this attempt: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Claim:
    """What an attempt needs to know about its run (read in the claiming transaction)."""

    run_id: int
    owner: str
    attempt: int
    workload: str
    steps: int
    seed: int
    lr: float
    queue: str
    recipe: dict[str, Any]
    trial_id: int | None
    study_id: int | None
    warmup_frac: float | None = None
    benchmark_id: int | None = None
    gpus: int = 1  # processes (torchrun ranks) of the run
    parallel: str = "none"  # none | ddp | fsdp


def claim_run(run_id: int, owner: str) -> Claim | None:
    """Atomically move a queued run to running for ``owner``; None if there is nothing to claim.

    A queued run whose cancel was requested is marked cancelled instead. A fresh attempt starts
    a fresh curve (points of an earlier, lost attempt are deleted in the same transaction).
    Transient database errors are retried (``core.db.with_retry``); after the retry budget the
    error is raised, so the caller can retry the message instead of losing it.
    """
    return with_retry(lambda: _claim_once(run_id, owner), f"claim of run {run_id}")


def _claim_once(run_id: int, owner: str) -> Claim | None:
    now = utcnow()
    lease = timedelta(seconds=get_settings().lease_seconds)
    with session_scope() as session:
        claimed = session.execute(
            update(Run)
            .where(
                Run.id == run_id, Run.status == RunStatus.queued, Run.cancel_requested.is_(False)
            )
            .values(
                status=RunStatus.running,
                lease_owner=owner,
                lease_expires_at=now + lease,
                attempts=Run.attempts + 1,
                started_at=now,
                failure_reason=None,
            )
        )
        if rowcount(claimed) != 1:
            mine = session.scalar(select(Run.id).where(*_owned(run_id, owner)))
            if mine is not None:  # an earlier try committed the claim but its reply was lost
                return _claim_of(session, run_id, owner)
            session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == RunStatus.queued, Run.cancel_requested)
                .values(status=RunStatus.cancelled, finished_at=now)
            )
            return None
        session.execute(delete(RunMetric).where(RunMetric.run_id == run_id))
        return _claim_of(session, run_id, owner)


def _claim_of(session: Session, run_id: int, owner: str) -> Claim:
    """The claim of ``owner`` on run ``run_id`` (read in the claiming transaction)."""
    run = session.get_one(Run, run_id)
    recipe = session.get_one(Recipe, run.recipe_id)
    trial = session.get(SearchTrial, run.trial_id) if run.trial_id else None
    cell_id = run.benchmark_cell_id
    cell = session.get(BenchmarkCell, cell_id) if cell_id else None
    return Claim(
        run_id=run.id,
        owner=owner,
        attempt=run.attempts,
        workload=run.workload,
        steps=run.steps,
        seed=run.seed,
        lr=run.lr,
        queue=run.queue,
        recipe=dict(recipe.canonical),
        trial_id=run.trial_id,
        study_id=trial.study_id if trial else None,
        warmup_frac=run.warmup_frac,
        benchmark_id=cell.benchmark_id if cell else None,
        gpus=run.gpus,
        parallel=run.parallel,
    )


def _owned(run_id: int, owner: str) -> Any:
    return (Run.id == run_id, Run.lease_owner == owner, Run.status == RunStatus.running)


# ------------------------------------------------------------------------------------------
# lease
# ------------------------------------------------------------------------------------------


class Lease:
    """Renews the lease in a thread and watches the cancel flag and the parent process.

    ``should_stop()`` is True when the user requested a cancel (``cancelled``) or when this
    attempt no longer owns the run (``lost``: the reaper re-queued it, or the worker died).
    """

    def __init__(self, claim: Claim, interval_s: float | None = None) -> None:
        settings = get_settings()
        self.claim = claim
        self.lease_s = settings.lease_seconds
        self.interval_s = interval_s or max(0.2, min(self.lease_s / 3.0, 2.0))
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._parent = os.getppid()
        self._thread = threading.Thread(target=self._loop, name="optforge-lease", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def should_stop(self) -> bool:
        return self.cancelled.is_set() or self.lost.is_set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            if os.getppid() != self._parent:  # worker main process died: stop, write nothing
                self.lost.set()
                return
            try:
                self.renew()
            except Exception:  # noqa: BLE001 - a DB hiccup; the lease has slack until expiry
                log.warning("lease renewal of run %s failed", self.claim.run_id, exc_info=True)
            if self.lost.is_set():
                return

    def renew(self) -> None:
        """Extend the lease (transient errors retried for at most half the lease)."""
        budget = min(get_settings().db_retry_s, self.lease_s / 2)
        with_retry(self._renew_once, f"lease of run {self.claim.run_id}", budget_s=budget)

    def _renew_once(self) -> None:
        with session_scope() as session:
            res = session.execute(
                update(Run)
                .where(*_owned(self.claim.run_id, self.claim.owner))
                .values(lease_expires_at=utcnow() + timedelta(seconds=self.lease_s))
            )
            if rowcount(res) != 1:
                self.lost.set()
                return
            flag = session.scalar(select(Run.cancel_requested).where(Run.id == self.claim.run_id))
        if flag:
            self.cancelled.set()


# ------------------------------------------------------------------------------------------
# curve
# ------------------------------------------------------------------------------------------


def point_row(point: Any) -> dict[str, Any]:
    """A run_metrics row from a trainer ``MetricPoint`` (unset metrics are left out)."""
    row: dict[str, Any] = {"step": int(point.step)}
    for field in METRIC_FIELDS:
        value = getattr(point, field)
        if value is not None:
            row[field] = int(value) if field == "tokens" else float(value)
    return row


_UPSERT_INSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def upsert_metrics(session: Session, run_id: int, rows: list[dict[str, Any]]) -> None:
    """Insert curve points; an existing (run_id, step) is merged, never duplicated."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = _UPSERT_INSERTS.get(dialect)
    if insert is None:  # pragma: no cover - only Postgres and SQLite are supported
        raise RuntimeError(f"unsupported database dialect {dialect!r}")
    table = cast(Table, RunMetric.__table__)
    for row in rows:
        values = {"run_id": run_id, "tokens": 0, "elapsed_s": 0.0, **row}
        stmt = insert(table).values(**values)
        merged = {
            f: func.coalesce(getattr(stmt.excluded, f), table.c[f])
            for f in METRIC_FIELDS
            if f in row
        }
        if merged:
            stmt = stmt.on_conflict_do_update(index_elements=["run_id", "step"], set_=merged)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=["run_id", "step"])
        session.execute(stmt)


class CurveWriter:
    """Buffers curve points (merging a step's train and val points) and writes them in batches."""

    def __init__(self, claim: Claim, lease: Lease, flush_every_s: float = 1.0) -> None:
        self.claim = claim
        self.lease = lease
        self.flush_every_s = flush_every_s
        self._buffer: dict[int, dict[str, Any]] = {}
        self._last = utcnow()

    def add(self, point: Any) -> None:
        row = point_row(point)
        self._buffer.setdefault(row["step"], {}).update(row)
        if (utcnow() - self._last).total_seconds() >= self.flush_every_s:
            self.flush()

    def take(self) -> list[dict[str, Any]]:
        rows = [self._buffer[s] for s in sorted(self._buffer)]
        self._buffer.clear()
        self._last = utcnow()
        return rows

    def flush(self) -> None:
        """Write buffered points if this attempt still owns the run.

        The ownership check is an UPDATE (it also renews the lease), so it locks the run row
        until the points are committed: a reaper or a new claim cannot slip in between the
        check and the write and find this attempt's points in the next attempt's curve.

        A database that stays unreachable past the retry budget keeps the points buffered for
        the next flush (or the final transaction): training goes on, nothing is lost."""
        rows = self.take()
        if not rows or self.lease.lost.is_set():
            return
        try:
            owned = with_retry(lambda: self._write(rows), f"curve of run {self.claim.run_id}")
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("curve of run %s kept for later: %s", self.claim.run_id, exc)
            for row in rows:  # newer points of a step (none yet) win over the kept ones
                self._buffer[row["step"]] = {**row, **self._buffer.get(row["step"], {})}
            return
        if not owned:
            self.lease.lost.set()

    def _write(self, rows: list[dict[str, Any]]) -> bool:
        with session_scope() as session:
            res = session.execute(
                update(Run)
                .where(*_owned(self.claim.run_id, self.claim.owner))
                .values(lease_expires_at=utcnow() + timedelta(seconds=self.lease.lease_s))
            )
            if rowcount(res) != 1:
                return False
            upsert_metrics(session, self.claim.run_id, rows)
        return True


# ------------------------------------------------------------------------------------------
# final result
# ------------------------------------------------------------------------------------------


def result_values(result: Any, claim: Claim) -> dict[str, Any]:
    """Run columns from a trainer TrainResult (status, final metrics, environment)."""
    status = str(getattr(result, "status", "failed"))
    if status not in RESULT_STATUSES:
        raise ValueError(f"trainer returned unknown status {status!r}")
    values: dict[str, Any] = {"status": status}
    for field in METRIC_COLUMNS:
        value = getattr(result, field, None)
        if value is not None:
            values[field] = value
    env = dict(getattr(result, "env", None) or {})
    env.update(worker=claim.owner, attempt=claim.attempt, queue=claim.queue)
    values["env"] = env
    return values


def finish_run(claim: Claim, values: dict[str, Any], curve: list[dict[str, Any]]) -> bool:
    """Record the final result and the rest of the curve in ONE transaction.

    Returns False (and writes nothing) when this attempt no longer owns the run. Transient
    database errors are retried; a retry after a commit whose reply was lost finds the result
    recorded by this attempt (``env.worker``) and returns True.
    """
    now = utcnow()

    def write() -> bool:
        with session_scope() as session:
            res = session.execute(
                update(Run)
                .where(*_owned(claim.run_id, claim.owner))
                .values(**values, lease_owner=None, lease_expires_at=None, finished_at=now)
            )
            if rowcount(res) == 1:
                upsert_metrics(session, claim.run_id, curve)
                return True
            row = session.execute(select(Run.status, Run.env).where(Run.id == claim.run_id))
            status, env = row.one_or_none() or (None, None)
            session.rollback()
            return status == values["status"] and (env or {}).get("worker") == claim.owner

    return with_retry(write, f"result of run {claim.run_id}")


def fail_run(claim: Claim, exc: BaseException, curve: list[dict[str, Any]]) -> bool:
    """Mark the run failed with the exception as the reason (keeping the curve so far)."""
    tb = "".join(traceback.format_exception(exc)[-6:])
    reason = f"{type(exc).__name__}: {exc}"[:500]
    if "OutOfMemoryError" in type(exc).__name__:
        reason = f"OOM: {reason}"
    values = {"status": RunStatus.failed, "failure_reason": f"{reason}\n{tb}"[:4000]}
    return finish_run(claim, values, curve)
