"""The reaper: expired leases, lost messages and stalled studies (no torch here).

One pass (:func:`reap_once`) runs in every worker's main process every ``reaper_interval_s`` and
as the ``optforge.reap`` task. Each step is a conditional UPDATE, so concurrent reapers never
double-act on a run; messages are sent only after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

import core.broker  # module attribute lookups at call time: tests swap its senders
from core.config import get_settings
from core.db import session_scope
from core.models import Run, RunStatus, SearchTrial

log = logging.getLogger(__name__)

Dispatch = Callable[[int, str], None]
BATCH = 500


def reap_once(
    now: datetime | None = None,
    dispatch: Dispatch | None = None,
    tick: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Re-queue or fail expired runs, re-send old queued runs, tick running studies."""
    now = now or datetime.now(UTC)
    send: Dispatch = dispatch or core.broker.dispatch_run
    requeued, failed, studies = expire_leases(now)
    resent = lost_messages(now) + stale_queued(now)
    for run_id, queue in requeued + resent:
        send(run_id, queue)
    # the task modules import search's schedulers (about 1 s): only when the reaper runs
    from workers.study_tasks import running_study_ids

    study_ids = sorted(set(running_study_ids()) | studies)
    for sid in study_ids:
        (tick or core.broker.dispatch_study_tick)(sid)
    bench_ids = tick_benchmarks()
    return {
        "requeued": len(requeued),
        "failed": failed,
        "redispatched": len(resent),
        "study_ticks": len(study_ids),
        "benchmark_ticks": len(bench_ids),
    }


def tick_benchmarks() -> list[int]:
    """Send ``benchmark_tick`` for every running benchmark (a lost tick never stalls one)."""
    from workers.bench_tasks import running_benchmark_ids  # see reap_once: search's imports

    ids = running_benchmark_ids()
    for bid in ids:
        core.broker.dispatch_benchmark_tick(bid)
    return ids


def expire_leases(now: datetime) -> tuple[list[tuple[int, str]], int, set[int]]:
    """Runs whose lease expired: back to queued (attempts < max) or failed with the reason.

    Returns ((run_id, queue) to dispatch, number failed, study ids touched).
    """
    out: list[tuple[int, str]] = []
    failed = 0
    studies: set[int] = set()
    with session_scope() as session:
        for row in _expired(session, now):
            reason = f"lease of {row.lease_owner} expired (worker lost) on attempt {row.attempts}"
            values = release_values(row.attempts, row.cancel_requested, reason, now)
            still_expired = (
                Run.id == row.id,
                Run.status == RunStatus.running,
                Run.lease_expires_at < now,
            )
            res = session.execute(update(Run).where(*still_expired).values(**values))
            if not getattr(res, "rowcount", 0):
                continue  # another reaper (or the owner) got there first
            if row.study_id is not None:
                studies.add(row.study_id)
            if values["status"] == RunStatus.failed:
                failed += 1
                log.warning("run %s failed: %s", row.id, values["failure_reason"])
            elif values["status"] == RunStatus.queued:
                out.append((row.id, row.queue))
    return out, failed, studies


def _expired(session: Session, now: datetime) -> list[Any]:
    """Running runs whose lease expired before ``now`` (with their study, if a trial's)."""
    return list(
        session.execute(
            select(
                Run.id,
                Run.attempts,
                Run.queue,
                Run.lease_owner,
                Run.cancel_requested,
                SearchTrial.study_id,
            )
            .outerjoin(SearchTrial, Run.trial_id == SearchTrial.id)
            .where(Run.status == RunStatus.running, Run.lease_expires_at < now)
            .limit(BATCH)
        ).all()
    )


def release_values(
    attempts: int, cancel_requested: bool, reason: str, now: datetime
) -> dict[str, object]:
    """Column values of a running run whose attempt ended without a result of its own:
    cancelled (nobody wants it), failed (``max_attempts`` spent) or queued for another try."""
    values: dict[str, object] = {"lease_owner": None, "lease_expires_at": None}
    if cancel_requested:
        values.update(status=RunStatus.cancelled, finished_at=now, failure_reason=reason)
    elif attempts >= get_settings().max_attempts:
        values.update(
            status=RunStatus.failed,
            finished_at=now,
            failure_reason=f"{reason}; gave up after {attempts} attempts",
        )
    else:
        values.update(status=RunStatus.queued, dispatched_at=now, failure_reason=reason)
    return values


def release_run(run_id: int, owner: str, reason: str) -> tuple[int, str] | None:
    """Give back the run ``owner`` is training, as an expired lease would (a rank of a
    multi-process run died: not the recipe's fault). Returns ``(run_id, queue)`` to dispatch
    when it was queued again, else None."""
    now = datetime.now(UTC)
    owned = (Run.id == run_id, Run.lease_owner == owner, Run.status == RunStatus.running)
    with session_scope() as session:
        row = session.execute(
            select(Run.attempts, Run.queue, Run.cancel_requested).where(*owned)
        ).one_or_none()
        if row is None:
            return None
        values = release_values(row.attempts, row.cancel_requested, reason, now)
        res = session.execute(update(Run).where(*owned).values(**values))
        requeued = bool(getattr(res, "rowcount", 0)) and values["status"] == RunStatus.queued
    return (run_id, row.queue) if requeued else None


def lost_messages(
    now: datetime, pending: Callable[[], set[int] | None] | None = None
) -> list[tuple[int, str]]:
    """Queued runs past ``lost_message_grace_s`` whose message the broker no longer holds.

    The database is read before the broker: a message taken by a worker in between shows
    up as a duplicate at worst, which the atomic claim makes harmless. Brokers that cannot
    be inspected (the embedded one) are left to :func:`stale_queued`.
    """
    cutoff = now - timedelta(seconds=get_settings().lost_message_grace_s)
    candidates = _queued_since(cutoff)
    if not candidates:
        return []
    try:
        in_broker = (pending or core.broker.pending_run_ids)()
    except Exception as exc:  # noqa: BLE001 - broker down: nothing can be re-sent anyway
        log.warning("cannot inspect the broker for lost messages: %s", exc)
        return []
    if in_broker is None:
        return []
    missing = [(run_id, queue) for run_id, queue in candidates if run_id not in in_broker]
    return _mark_resent(missing, cutoff, now)


def stale_queued(now: datetime) -> list[tuple[int, str]]:
    """Queued runs whose last message is older than ``redispatch_after_s`` (message lost?)."""
    cutoff = now - timedelta(seconds=get_settings().redispatch_after_s)
    return _mark_resent(_queued_since(cutoff), cutoff, now)


def _queued_since(cutoff: datetime) -> list[tuple[int, str]]:
    """``(run_id, queue)`` of queued runs whose last message was sent before ``cutoff``."""
    sent_at = func.coalesce(Run.dispatched_at, Run.created_at)
    with session_scope() as session:
        rows = session.execute(
            select(Run.id, Run.queue)
            .where(Run.status == RunStatus.queued, sent_at < cutoff)
            .order_by(Run.id)
            .limit(BATCH)
        ).all()
    return [(int(row.id), str(row.queue)) for row in rows]


def _mark_resent(
    runs: list[tuple[int, str]], cutoff: datetime, now: datetime
) -> list[tuple[int, str]]:
    """Set ``dispatched_at`` of runs still queued and not sent since ``cutoff``; those to send."""
    out: list[tuple[int, str]] = []
    with session_scope() as session:
        for run_id, queue in runs:
            res = session.execute(
                update(Run)
                .where(
                    Run.id == run_id,
                    Run.status == RunStatus.queued,
                    or_(Run.dispatched_at.is_(None), Run.dispatched_at < cutoff),
                )
                .values(dispatched_at=now)
            )
            if getattr(res, "rowcount", 0):
                out.append((run_id, queue))
    return out
