"""The reaper: expired leases, lost messages and stalled studies (no torch here).

One pass (:func:`reap_once`) runs in every worker's main process every ``reaper_interval_s`` and
as the ``optforge.reap`` task. Each step is a conditional UPDATE, so concurrent reapers never
double-act on a run; messages are sent only after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select, update

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
    from core.broker import dispatch_run, dispatch_study_tick

    now = now or datetime.now(UTC)
    send: Dispatch = dispatch or dispatch_run
    requeued, failed, studies = expire_leases(now)
    resent = stale_queued(now)
    for run_id, queue in requeued + resent:
        send(run_id, queue)
    from workers.study_tasks import running_study_ids

    study_ids = sorted(set(running_study_ids()) | studies)
    for sid in study_ids:
        (tick or dispatch_study_tick)(sid)
    return {
        "requeued": len(requeued),
        "failed": failed,
        "redispatched": len(resent),
        "study_ticks": len(study_ids),
    }


def expire_leases(now: datetime) -> tuple[list[tuple[int, str]], int, set[int]]:
    """Runs whose lease expired: back to queued (attempts < max) or failed with the reason.

    Returns ((run_id, queue) to dispatch, number failed, study ids touched).
    """
    max_attempts = get_settings().max_attempts
    out: list[tuple[int, str]] = []
    failed = 0
    studies: set[int] = set()
    with session_scope() as session:
        rows = session.execute(
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
        for row in rows:
            final = row.attempts >= max_attempts
            values: dict[str, object] = {"lease_owner": None, "lease_expires_at": None}
            reason = f"lease of {row.lease_owner} expired (worker lost) on attempt {row.attempts}"
            if row.cancel_requested:  # nobody wants it any more: do not train it again
                values.update(status=RunStatus.cancelled, finished_at=now, failure_reason=reason)
            elif final:
                values.update(
                    status=RunStatus.failed,
                    finished_at=now,
                    failure_reason=f"{reason}; gave up after {row.attempts} attempts",
                )
            else:
                values.update(status=RunStatus.queued, dispatched_at=now, failure_reason=reason)
            res = session.execute(
                update(Run)
                .where(
                    Run.id == row.id,
                    Run.status == RunStatus.running,
                    Run.lease_expires_at < now,
                )
                .values(**values)
            )
            if not getattr(res, "rowcount", 0):
                continue
            if row.study_id is not None:
                studies.add(row.study_id)
            if row.cancel_requested:
                continue
            if final:
                failed += 1
                log.warning("run %s failed: %s", row.id, values["failure_reason"])
            else:
                out.append((row.id, row.queue))
    return out, failed, studies


def stale_queued(now: datetime) -> list[tuple[int, str]]:
    """Queued runs whose last message is older than ``redispatch_after_s`` (message lost?)."""
    cutoff = now - timedelta(seconds=get_settings().redispatch_after_s)
    sent_at = func.coalesce(Run.dispatched_at, Run.created_at)
    out: list[tuple[int, str]] = []
    with session_scope() as session:
        rows = session.execute(
            select(Run.id, Run.queue)
            .where(Run.status == RunStatus.queued, sent_at < cutoff)
            .order_by(Run.id)
            .limit(BATCH)
        ).all()
        for row in rows:
            res = session.execute(
                update(Run)
                .where(
                    Run.id == row.id,
                    Run.status == RunStatus.queued,
                    or_(Run.dispatched_at.is_(None), Run.dispatched_at < cutoff),
                )
                .values(dispatched_at=now)
            )
            if getattr(res, "rowcount", 0):
                out.append((row.id, row.queue))
    return out
