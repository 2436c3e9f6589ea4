"""Transient database errors on the worker side (SQLite, fake trainer): bounded retries, points
kept, replies lost after a commit, and the reaper re-sending runs whose message is gone."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from run_rows import Point, get_run, migrate, new_runs
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _operational(sqlstate: str | None = None) -> OperationalError:
    orig: Exception = _PgError(sqlstate) if sqlstate else ConnectionResetError("reset")
    return OperationalError("SELECT 1", {}, orig)


@pytest.fixture
def db(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    migrate(monkeypatch, OPTFORGE_DB_RETRY_S="0.5")
    return data_dir


def _new_run(**values: Any) -> int:
    (run_id,) = new_runs(1, **values)
    return run_id


def test_transient_errors_are_told_apart_from_bad_statements() -> None:
    from core.db import is_transient

    for exc in (_operational("57P01"), _operational("40001"), _operational(), PoolTimeoutError()):
        assert is_transient(exc), exc
    assert not is_transient(ProgrammingError("x", {}, _PgError("42601")))
    assert not is_transient(IntegrityError("x", {}, _PgError("23505")))
    assert not is_transient(_operational("42P01"))  # undefined table: retrying cannot help
    assert not is_transient(ValueError("not a database error"))


def test_with_retry_backs_off_then_succeeds_or_gives_up(db: Path) -> None:
    from core.db import with_retry

    calls: list[float] = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise _operational("57P01")
        return "ok"

    assert with_retry(flaky, "test") == "ok" and len(calls) == 3
    assert calls[2] - calls[1] > calls[1] - calls[0]  # the delay grows
    start = time.monotonic()
    with pytest.raises(OperationalError):
        with_retry(lambda: (_ for _ in ()).throw(_operational()), "test", budget_s=0.3)
    assert time.monotonic() - start < 1.0  # bounded by the budget
    bad = ProgrammingError("x", {}, _PgError("42601"))
    tries: list[int] = []

    def syntax() -> None:
        tries.append(1)
        raise bad

    with pytest.raises(ProgrammingError):
        with_retry(syntax, "test")
    assert tries == [1]  # not retried


def test_claim_and_finish_survive_a_lost_reply(db: Path) -> None:
    """A retry after a commit whose answer never came back sees its own work, not a stranger's."""
    from workers.runs_db import claim_run, finish_run

    rid = _new_run()
    claim = claim_run(rid, "w1")
    assert claim is not None
    again = claim_run(rid, "w1")  # the same owner retrying: its claim, unchanged
    assert again is not None and again.attempt == 1 and get_run(rid).attempts == 1
    assert claim_run(rid, "w2") is None
    values = {"status": "succeeded", "final_val_loss": 2.0, "env": {"worker": "w1"}}
    assert finish_run(claim, values, [{"step": 20, "train_loss": 1.0}])
    assert finish_run(claim, values, [])  # the retry finds this attempt's result recorded
    other = type(claim)(**{**claim.__dict__, "owner": "w2"})
    assert not finish_run(other, {**values, "env": {"worker": "w2"}}, [])


def test_curve_points_are_kept_while_the_database_is_down(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.db import session_scope
    from core.models import RunMetric
    from workers.runs_db import CurveWriter, Lease, claim_run

    rid = _new_run()
    claim = claim_run(rid, "w1")
    assert claim is not None
    curve = CurveWriter(claim, Lease(claim), flush_every_s=3600)
    real_write = CurveWriter._write
    down = [True]

    def write(self: CurveWriter, rows: list[dict[str, Any]]) -> bool:
        if down[0]:
            raise _operational("57P01")
        return real_write(self, rows)

    monkeypatch.setattr(CurveWriter, "_write", write)
    for step in (10, 20):
        curve.add(Point(step, train_loss=1.0))
    curve.flush()  # the retry budget (0.5 s) runs out: nothing written, nothing lost
    assert not curve.lease.lost.is_set()
    curve.add(Point(30, train_loss=1.0, val_loss=2.0))
    down[0] = False
    curve.flush()
    with session_scope() as s:
        steps = s.scalars(select(RunMetric.step).where(RunMetric.run_id == rid)).all()
    assert sorted(steps) == [10, 20, 30]


def test_database_errors_never_fail_the_run(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.train
    from workers.tasks import execute_run

    def trainer(*_a: Any, **_k: Any) -> Any:
        raise _operational("57P01")  # e.g. a pruner query after the retry budget

    monkeypatch.setattr(workers.train, "run_workload", trainer)
    rid = _new_run()
    assert execute_run(rid, owner="w1") == "lost"
    run = get_run(rid)
    assert run.status == "running" and run.failure_reason is None  # the reaper re-queues it

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("the trainer's own bug")

    monkeypatch.setattr(workers.train, "run_workload", broken)
    other = _new_run()
    assert execute_run(other, owner="w1") == "failed"
    assert "the trainer's own bug" in get_run(other).failure_reason


def test_reaper_resends_queued_runs_missing_from_the_broker(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.config import get_settings
    from core.db import session_scope
    from core.models import Run
    from workers.reaper import lost_messages

    grace = get_settings().lost_message_grace_s
    now = datetime.now(UTC)
    old = now - timedelta(seconds=grace + 5)
    lost = _new_run(created_at=old)
    waiting = _new_run(created_at=old)
    fresh = _new_run(created_at=now)  # its message may not be sent yet: left alone
    running = _new_run(created_at=old, status="running")
    in_broker = {waiting}
    assert lost_messages(now, pending=lambda: in_broker) == [(lost, "cpu")]
    with session_scope() as s:
        sent_at = s.scalar(select(Run.dispatched_at).where(Run.id == lost))
    assert sent_at is not None
    assert lost_messages(now, pending=lambda: in_broker) == []  # just re-sent: grace again
    later = now + timedelta(seconds=grace + 1)
    assert lost_messages(later, pending=lambda: {lost, waiting, fresh}) == []
    assert lost_messages(later, pending=lambda: None) == []  # not inspectable: slow timer only

    def down() -> set[int]:  # a broker that is down: nothing can be re-sent
        raise ConnectionError("redis down")

    assert lost_messages(later, pending=down) == []
    assert {r for r, _ in lost_messages(later, pending=set)} == {lost, waiting, fresh}
    assert running not in {r for r, _ in lost_messages(later + timedelta(hours=1), set)}


def test_pending_run_ids_reads_queues_and_unacked(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    import json

    import redis

    from core.broker import TRAIN_RUN, pending_run_ids
    from core.config import Settings

    def message(run_id: int, task: str = TRAIN_RUN) -> bytes:
        body = base64.b64encode(json.dumps([[run_id], {}, {}]).encode()).decode()
        return json.dumps(
            {"body": body, "headers": {"task": task}, "properties": {"body_encoding": "base64"}}
        ).encode()

    lists = {"cpu": [message(3), b"garbage"], "gpu\x06\x163": [message(4)]}

    class FakeRedis:
        def lrange(self, key: str, *_: int) -> list[bytes]:
            return lists.get(key, [])

        def hvals(self, key: str) -> list[bytes]:
            assert key == "unacked"
            return [json.dumps([json.loads(message(5)), "", "cpu"]).encode(), message(6)]

        def close(self) -> None:
            pass

    monkeypatch.setattr(redis.Redis, "from_url", staticmethod(lambda *a, **k: FakeRedis()))
    lists["control"] = [message(9, task="optforge.study_tick")]
    assert pending_run_ids(Settings(broker_url="redis://x:1/0")) == {3, 4, 5}
    assert pending_run_ids(Settings(broker_url="sqla+sqlite:///x.db")) is None
