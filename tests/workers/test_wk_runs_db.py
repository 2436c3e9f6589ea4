"""train_run's database side and the reaper, on SQLite with a fake trainer (no Celery)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from run_rows import Point, get_run, migrate, new_runs
from sqlalchemy import func, select, update


@dataclass
class FakeResult:
    status: str = "succeeded"
    final_val_loss: float | None = 2.5
    stopped_step: int | None = None
    tokens_per_s: float = 1000.0
    wall_s: float = 0.1
    state_bytes: int = 800
    n_params: int = 100
    state_bytes_per_param: float = 8.0
    env: dict[str, Any] = field(default_factory=lambda: {"torch": "x"})


@pytest.fixture
def db(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    migrate(monkeypatch, OPTFORGE_LEASE_SECONDS="1")
    return data_dir


def _curve(run_id: int) -> list[tuple[int, float | None, float | None]]:
    from core.db import session_scope
    from core.models import RunMetric

    with session_scope() as s:
        rows = s.scalars(
            select(RunMetric).where(RunMetric.run_id == run_id).order_by(RunMetric.step)
        ).all()
        return [(m.step, m.train_loss, m.val_loss) for m in rows]


def _fake_trainer(monkeypatch: pytest.MonkeyPatch, body) -> None:  # type: ignore[no-untyped-def]
    import workers.train

    monkeypatch.setattr(workers.train, "run_workload", body)


def test_claim_is_atomic_and_counts_attempts(db: Path) -> None:
    from workers.runs_db import claim_run

    (rid,) = new_runs()
    claim = claim_run(rid, "w1")
    assert claim is not None and claim.attempt == 1 and claim.recipe == {"lr": 0.01}
    assert claim_run(rid, "w2") is None  # a second delivery finds nothing to claim
    run = get_run(rid)
    assert run.status == "running" and run.lease_owner == "w1" and run.attempts == 1


def test_cancel_requested_before_claim_is_never_trained(db: Path) -> None:
    from core.db import session_scope
    from core.models import Run
    from workers.runs_db import claim_run

    (rid,) = new_runs()
    with session_scope() as s:
        s.execute(update(Run).where(Run.id == rid).values(cancel_requested=True))
    assert claim_run(rid, "w1") is None
    assert get_run(rid).status == "cancelled"


def test_successful_run_writes_merged_curve_and_result(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.tasks import execute_run

    def trainer(workload, recipe, steps, seed, lr, callbacks, **kw):  # type: ignore[no-untyped-def]
        assert (workload, steps, lr, recipe) == ("synthetic-lm", 20, 0.01, {"lr": 0.01})
        assert kw["warmup_frac"] is None  # the run's own schedule; None = the trainer's default
        for step in (10, 20):
            callbacks.on_step(Point(step, train_loss=3.0 - step / 20))
        callbacks.on_step(Point(20, val_loss=2.5))  # merged into step 20's row
        assert callbacks.on_eval(Point(20, val_loss=2.5)) == "continue"  # no trial: no pruner
        callbacks.on_step(Point(10, train_loss=9.0))  # a repeated step overwrites, not duplicates
        return FakeResult()

    _fake_trainer(monkeypatch, trainer)
    (rid,) = new_runs()
    assert execute_run(rid, owner="w1") == "succeeded"
    assert execute_run(rid, owner="w2") == "skipped"
    assert _curve(rid) == [(10, 9.0, None), (20, 2.0, 2.5)]
    run = get_run(rid)
    assert run.status == "succeeded" and run.final_val_loss == 2.5 and run.attempts == 1
    assert run.lease_owner is None and run.finished_at is not None
    assert run.env["worker"] == "w1" and run.env["torch"] == "x"


def test_trainer_exception_fails_run_with_reason(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.tasks import execute_run

    def trainer(*args, callbacks, **kw):  # type: ignore[no-untyped-def]
        callbacks.on_step(Point(10, train_loss=1.0))
        raise RuntimeError("boom at step 11")

    _fake_trainer(monkeypatch, trainer)
    (rid,) = new_runs()
    assert execute_run(rid) == "failed"
    run = get_run(rid)
    assert run.status == "failed" and "RuntimeError: boom at step 11" in run.failure_reason
    assert _curve(rid) == [(10, 1.0, None)]


def test_cooperative_cancel(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.db import session_scope
    from core.models import Run
    from workers.tasks import execute_run

    (rid,) = new_runs()

    def trainer(*args, callbacks, **kw):  # type: ignore[no-untyped-def]
        with session_scope() as s:  # what POST /v1/runs/{id}/cancel does
            s.execute(update(Run).where(Run.id == rid).values(cancel_requested=True))
        deadline = time.monotonic() + 10
        while not callbacks.should_cancel():
            assert time.monotonic() < deadline, "cancel flag never seen"
            time.sleep(0.05)
        return FakeResult(status="cancelled", stopped_step=7, final_val_loss=None)

    _fake_trainer(monkeypatch, trainer)
    assert execute_run(rid) == "cancelled"
    run = get_run(rid)
    assert run.status == "cancelled" and run.stopped_step == 7


def test_attempt_that_lost_its_lease_writes_nothing(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.db import session_scope
    from core.models import Run
    from workers.tasks import execute_run

    (rid,) = new_runs()

    def trainer(*args, callbacks, **kw):  # type: ignore[no-untyped-def]
        with session_scope() as s:  # the reaper took the run back meanwhile
            s.execute(update(Run).where(Run.id == rid).values(status="queued", lease_owner=None))
        deadline = time.monotonic() + 10
        while not callbacks.should_cancel():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        callbacks.on_step(Point(10, train_loss=1.0))
        return FakeResult(status="cancelled")

    _fake_trainer(monkeypatch, trainer)
    assert execute_run(rid) == "lost"
    run = get_run(rid)
    assert run.status == "queued" and run.final_val_loss is None and _curve(rid) == []


def test_curve_flush_renews_the_lease_and_stops_once_the_run_is_taken(db: Path) -> None:
    from core.db import session_scope
    from core.models import Run
    from workers.runs_db import CurveWriter, Lease, claim_run

    (rid,) = new_runs()
    claim = claim_run(rid, "w1")
    assert claim is not None
    lease = Lease(claim)  # not entered: no renewal thread, only flush touches the row
    curve = CurveWriter(claim, lease, flush_every_s=3600)
    before = get_run(rid).lease_expires_at
    time.sleep(0.01)
    curve.add(Point(10, train_loss=1.0))
    curve.flush()
    assert _curve(rid) == [(10, 1.0, None)] and not lease.lost.is_set()
    assert get_run(rid).lease_expires_at > before  # the owning write extended the lease
    with session_scope() as s:  # the reaper re-queued it and another attempt claimed it
        s.execute(update(Run).where(Run.id == rid).values(status="queued", lease_owner=None))
    assert claim_run(rid, "w2") is not None
    curve.add(Point(20, train_loss=0.5))
    curve.flush()
    assert lease.lost.is_set() and _curve(rid) == []  # the new attempt's curve stays clean


def test_reaper_requeues_then_fails_expired_runs(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.config import get_settings
    from core.db import session_scope
    from core.models import Run
    from workers.reaper import reap_once
    from workers.runs_db import claim_run

    monkeypatch.setenv("OPTFORGE_MAX_ATTEMPTS", "2")
    get_settings.cache_clear()
    a, b = new_runs(2)
    sent: list[tuple[int, str]] = []
    dispatch = lambda rid, q: sent.append((rid, q))  # noqa: E731
    for attempt in (1, 2):
        assert claim_run(a, f"dead-{attempt}") is not None
        later = datetime.now(UTC) + timedelta(seconds=5)  # lease of 1 s has expired by then
        counts = reap_once(now=later, dispatch=dispatch, tick=lambda sid: None)
        assert counts["requeued"] == (1 if attempt == 1 else 0)
    run = get_run(a)
    assert run.status == "failed" and run.attempts == 2
    assert "expired" in run.failure_reason and "dead-2" in run.failure_reason
    assert (a, "cpu") in sent
    # b is queued and was never claimed: re-sent once its last dispatch is old enough
    with session_scope() as s:
        s.execute(update(Run).where(Run.id == b).values(dispatched_at=datetime.now(UTC)))
    assert reap_once(dispatch=dispatch, tick=lambda sid: None)["redispatched"] == 0
    old = datetime.now(UTC) + timedelta(seconds=get_settings().redispatch_after_s + 1)
    assert reap_once(now=old, dispatch=dispatch, tick=lambda sid: None)["redispatched"] == 1
    assert reap_once(now=old, dispatch=dispatch, tick=lambda sid: None)["redispatched"] == 0
    assert sent.count((b, "cpu")) == 1


def test_concurrent_claims_give_one_winner(db: Path) -> None:
    from workers.runs_db import claim_run

    (rid,) = new_runs()
    wins: list[object] = []
    threads = [
        threading.Thread(target=lambda i=i: wins.append(claim_run(rid, f"w{i}"))) for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(w is not None for w in wins) == 1


def test_upsert_metrics_never_duplicates(db: Path) -> None:
    from core.db import session_scope
    from core.models import RunMetric
    from workers.runs_db import upsert_metrics

    (rid,) = new_runs()
    with session_scope() as s:
        upsert_metrics(s, rid, [{"step": 5, "train_loss": 1.0}, {"step": 6, "train_loss": 0.9}])
        upsert_metrics(s, rid, [{"step": 5, "val_loss": 1.1}])
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(RunMetric)) == 2
    assert _curve(rid) == [(5, 1.0, 1.1), (6, 0.9, None)]


def test_reaper_cancels_an_expired_run_whose_cancel_was_requested(db: Path) -> None:
    from core.db import session_scope
    from core.models import Run
    from workers.reaper import reap_once
    from workers.runs_db import claim_run

    (rid,) = new_runs()
    assert claim_run(rid, "dead") is not None
    with session_scope() as s:
        s.execute(update(Run).where(Run.id == rid).values(cancel_requested=True))
    sent: list[int] = []
    later = datetime.now(UTC) + timedelta(seconds=5)
    reap_once(now=later, dispatch=lambda r, q: sent.append(r), tick=lambda sid: None)
    assert get_run(rid).status == "cancelled" and sent == []
