"""Central asker on the embedded default (SQLite): runs completed by an in-process executor.

The executor stands in for a worker: it claims a run atomically, writes a synthetic loss curve
(worse the further the lr is from 3e-3) to run_metrics, asks the pruner hook at every eval like
the trainer does, and records the result. Everything else is the real scheduler + Optuna.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from core.models import Base, Run, RunMetric, SearchStudy, SearchTrial

BEST_LR = 3e-3
CRAFTED_SPACE = {
    "norms": {"sequences": [["row", "col"], ["sign"]]},
    "momentum": {"placement": ["none"]},
    "lr": {"low": 1e-6, "high": 1.0, "log": True},
}


@pytest.fixture
def db(data_dir):  # type: ignore[no-untyped-def]
    from core.db import get_engine

    Base.metadata.create_all(get_engine())
    return data_dir


def synthetic_loss(lr: float, step: int) -> float:
    return 2.0 + (math.log10(lr) - math.log10(BEST_LR)) ** 2 + 5.0 / step


def execute(run_id: int, fail: bool = False, diverge: bool = False, every: int = 3) -> str:
    """Train run ``run_id`` synthetically (claim, curve, pruner hook, result)."""
    from core.db import session_scope
    from search.pruner import should_prune_run

    with session_scope() as s:
        claimed = s.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "queued")
            .values(status="running", attempts=Run.attempts + 1, state_bytes_per_param=0.0)
        ).rowcount
        run = s.get(Run, run_id)
        steps, lr = run.steps, run.lr
    if not claimed:
        return "skipped"
    status, stopped, loss = "succeeded", None, math.nan
    for step in range(every, steps + 1, every):
        loss = math.inf if diverge and step > 6 else synthetic_loss(lr, step)
        with session_scope() as s:
            s.add(
                RunMetric(run_id=run_id, step=step, val_loss=loss if math.isfinite(loss) else None)
            )
        if diverge and not math.isfinite(loss):
            status, stopped = "diverged", step
            break
        if should_prune_run(run_id, step, loss):
            status, stopped = "pruned", step
            break
    with session_scope() as s:
        run = s.get(Run, run_id)
        run.status = "failed" if fail else status
        run.failure_reason = "worker crashed" if fail else None
        run.stopped_step = stopped
        run.final_val_loss = loss if status == "succeeded" else None
        run.state_bytes_per_param = 0.0
    return status


def tick_queue(study_id: int) -> list[int] | None:
    """One tick of the study: the run ids it dispatched, or None once it is no longer running
    (also used by tests/integration/test_study_e2e.py)."""
    from core.db import session_scope
    from search.scheduler import tick

    queue: list[int] = []
    tick(study_id, dispatch=queue.append)
    with session_scope() as s:
        return queue if s.get_one(SearchStudy, study_id).status == "running" else None


def drive(study_id: int, max_ticks: int = 200, **kw) -> list[int]:  # type: ignore[no-untyped-def]
    """Tick and execute until the study is no longer running; returns executed run ids."""
    done: list[int] = []
    for _ in range(max_ticks):
        queue = tick_queue(study_id)
        if queue is None:
            return done
        for run_id in queue:
            execute(run_id, **kw)
            done.append(run_id)
    raise AssertionError("study did not finish")


def new_study(**kw) -> int:  # type: ignore[no-untyped-def]
    from core.db import session_scope
    from search.scheduler import StudySpec, create_study

    with session_scope() as s:
        return create_study(s, StudySpec(**kw)).id


def trials_of(study_id: int) -> list[SearchTrial]:
    from core.db import session_scope

    with session_scope() as s:
        rows = s.scalars(
            select(SearchTrial)
            .where(SearchTrial.study_id == study_id)
            .order_by(SearchTrial.number)
        ).all()
        for t in rows:
            _ = t.runs
        return list(rows)


def test_study_completes_every_trial_terminal_and_linked(db) -> None:  # type: ignore[no-untyped-def]
    from search import study as ostudy

    sid = new_study(
        space=CRAFTED_SPACE,
        steps=30,
        n_trials=10,
        parallelism=3,
        seeds=[0, 1],
        sampler="random",
        seed=5,
    )
    drive(sid)
    trials = trials_of(sid)
    assert [t.number for t in trials] == list(range(10))
    assert all(t.status in ("complete", "pruned", "failed") for t in trials)
    assert all(len(t.runs) == 2 and {r.seed for r in t.runs} == {0, 1} for t in trials)
    complete = [t for t in trials if t.status == "complete"]
    assert complete
    for t in complete:  # value = mean over seeds (the synthetic curve is seed-independent)
        assert t.values[0] == pytest.approx(synthetic_loss(t.params["lr"], 30))
        assert t.values[1] == 0.0
    from core.db import session_scope

    with session_scope() as s:
        name = s.get(SearchStudy, sid).optuna_study_name
    states = ostudy.trial_states(ostudy.open_study(name, ["val_loss", "state_bytes_per_param"]))
    expect = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}
    assert states == {t.number: expect[t.status] for t in trials}


def test_pruning_stops_bad_lrs_and_keeps_the_best(db) -> None:  # type: ignore[no-untyped-def]
    sid = new_study(
        space=CRAFTED_SPACE, steps=30, n_trials=14, parallelism=1, sampler="random", seed=11
    )
    drive(sid)
    trials = trials_of(sid)
    pruned = [t for t in trials if t.status == "pruned"]
    assert len(pruned) > 0
    assert all(t.pruned_step is not None and t.pruned_step < 30 for t in pruned)
    assert all(r.stopped_step == t.pruned_step for t in pruned for r in t.runs)
    best = min(trials, key=lambda t: abs(math.log10(t.params["lr"]) - math.log10(BEST_LR)))
    assert best.status == "complete"


def test_failed_runs_retried_then_trial_failed_with_reason(db) -> None:  # type: ignore[no-untyped-def]
    sid = new_study(
        space=CRAFTED_SPACE, steps=12, n_trials=2, parallelism=2, max_retries=1, pruning=False
    )
    executed = drive(sid, fail=True)
    trials = trials_of(sid)
    assert len(executed) == 4  # each trial's run once + one bounded retry
    assert all(t.status == "failed" and "worker crashed" in t.failure_reason for t in trials)
    assert all(t.attempts == 2 and len(t.runs) == 2 for t in trials)


def test_diverged_run_fails_trial_with_step(db) -> None:  # type: ignore[no-untyped-def]
    sid = new_study(space=CRAFTED_SPACE, steps=12, n_trials=2, parallelism=1, pruning=False)
    drive(sid, diverge=True)
    for t in trials_of(sid):
        assert (
            t.status == "failed"
            and "diverged" in t.failure_reason
            and "step 9" in t.failure_reason
        )


def test_same_seed_replays_and_reuses_stored_results(db) -> None:  # type: ignore[no-untyped-def]
    kw = {
        "space": CRAFTED_SPACE,
        "steps": 12,
        "n_trials": 6,
        "parallelism": 2,
        "seed": 3,
        "pruning": False,
    }
    first = new_study(**kw)
    drive(first)
    second = new_study(**kw)
    executed = drive(second)
    a, b = trials_of(first), trials_of(second)
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.recipe_id for t in a] == [t.recipe_id for t in b]
    assert executed == []  # identical recipe+workload+steps+seed+lr: stored results reused
    assert all(r.reused_from_id is not None for t in b for r in t.runs)
    assert [t.values for t in a] == [t.values for t in b]
    third = new_study(**{**kw, "seed": 4})
    drive(third)
    assert [t.params for t in trials_of(third)] != [t.params for t in a]


def test_stale_running_run_is_requeued_and_dispatched(db) -> None:  # type: ignore[no-untyped-def]
    from core.db import session_scope
    from search.scheduler import tick

    sid = new_study(space=CRAFTED_SPACE, steps=12, n_trials=1, parallelism=1)
    sent: list[int] = []
    tick(sid, dispatch=sent.append)
    (run_id,) = sent
    with session_scope() as s:  # a worker claimed it and was killed: the lease runs out
        s.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(
                status="running",
                attempts=1,
                lease_owner="w1",
                lease_expires_at=datetime.now(UTC) - timedelta(hours=1),
            )
        )
    again: list[int] = []
    tick(sid, dispatch=again.append)
    assert again == [run_id]
    with session_scope() as s:
        assert s.get(Run, run_id).status == "queued"
    assert execute(run_id) == "succeeded"
    drive(sid)
    assert trials_of(sid)[0].status == "complete"


def test_cancel_fails_running_trials(db) -> None:  # type: ignore[no-untyped-def]
    from core.db import session_scope
    from search.scheduler import cancel_study, tick

    sid = new_study(space=CRAFTED_SPACE, steps=12, n_trials=4, parallelism=2)
    tick(sid, dispatch=lambda _id: None)
    with session_scope() as s:
        cancel_study(s, sid)
    with session_scope() as s:
        assert s.get(SearchStudy, sid).status == "cancelled"
        runs = s.scalars(select(Run)).all()
        assert runs and all(r.status == "cancelled" for r in runs)
    assert all(
        t.status == "failed" and t.failure_reason == "study cancelled" for t in trials_of(sid)
    )
    assert tick(sid, dispatch=lambda _id: None)["asked"] == 2  # no new asks once cancelled


def test_invalid_spec_rejected(db) -> None:  # type: ignore[no-untyped-def]
    from search.scheduler import StudySpec
    from search.space import SpaceError

    with pytest.raises(SpaceError):
        new_study(space={"norms": {"sequences": [["nope"]]}, "lr": [0.1]})
    with pytest.raises(ValueError, match="sampler"):
        new_study(sampler="cmaes")
    with pytest.raises(ValueError, match="objective"):
        new_study(objectives=["accuracy"])
    with pytest.raises(ValueError):
        StudySpec(seeds=[1, 1])


def test_orphaned_optuna_trial_is_failed(db) -> None:  # type: ignore[no-untyped-def]
    from core.db import session_scope
    from search import study as ostudy
    from search.scheduler import tick

    sid = new_study(space=CRAFTED_SPACE, steps=12, n_trials=2, parallelism=1, pruning=False)
    with session_scope() as s:
        name = s.get(SearchStudy, sid).optuna_study_name
    opt = ostudy.open_study(name, ["val_loss", "state_bytes_per_param"])
    opt.ask()  # asked in Optuna, never recorded by us (as if our commit had failed)
    tick(sid, dispatch=lambda _id: None)
    states = ostudy.trial_states(ostudy.open_study(name, ["val_loss", "state_bytes_per_param"]))
    assert states[0] == "FAIL" and states[1] == "RUNNING"
    assert [t.number for t in trials_of(sid)] == [1]


def test_redundant_tick_does_not_touch_optuna(db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from search import study as ostudy
    from search.scheduler import tick

    sid = new_study(space=CRAFTED_SPACE, steps=12, n_trials=3, parallelism=1)
    sent: list[int] = []
    tick(sid, dispatch=sent.append)

    def boom(*_a, **_k):  # type: ignore[no-untyped-def]
        raise AssertionError("a tick with nothing to do opened Optuna")

    monkeypatch.setattr(ostudy, "open_study", boom)
    assert tick(sid, dispatch=sent.append)["asked"] == 1  # run still queued: nothing to do
    assert len(sent) == 1
    monkeypatch.undo()
    execute(sent[0])
    assert tick(sid, dispatch=sent.append)["asked"] == 2  # finished run: tell + ask


def test_optuna_storage_must_not_share_our_database() -> None:
    from search.study import check_separate_storage, search_path_schema

    pg = "postgresql+psycopg://u@h/optforge"
    with pytest.raises(ValueError, match="database of its own"):
        check_separate_storage(pg, pg)
    with pytest.raises(ValueError, match="database of its own"):
        check_separate_storage("sqlite:////d/optforge.db", "sqlite:////d/optforge.db")
    with pytest.raises(ValueError, match="database of its own"):  # same database, other driver
        check_separate_storage("postgresql://v:pw@h/optforge?connect_timeout=5", pg)
    check_separate_storage(pg + "?options=-csearch_path%3Doptuna", pg)
    check_separate_storage("postgresql+psycopg://u@h/optuna", pg)
    assert search_path_schema(pg + "?options=-csearch_path%3Doptuna") == "optuna"
    assert search_path_schema(pg) is None
