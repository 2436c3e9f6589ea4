"""Studies on Postgres (+ Redis and real `optforge worker` processes for the end-to-end tests).

* concurrent ticks: two processes tick the same study and execute runs (synthetic executor from
  tests/search/test_scheduler.py) against Postgres + Optuna's own Postgres DB: the study-row lock
  must give exactly n_trials distinct trials and no trial left running;
* end to end: >= 8 trials on synthetic-lm with 2 real workers (service fixtures), the Pareto front
  in the API response; killing a worker mid-trial still reaches n_trials.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from integration.conftest import unavailable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "search"))

SPACE = {
    "norms": {"sequences": [["row", "col"], ["sign"], ["adam"]]},
    "momentum": {"placement": ["none", "matrices"], "beta": [0.9]},
    "lr": {"low": 1e-4, "high": 3e-2, "log": True},
}


@pytest.fixture
def pg_env(pg_url, pg_optuna_url, monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPTFORGE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("OPTFORGE_DATABASE_URL", pg_url)
    monkeypatch.setenv("OPTFORGE_OPTUNA_STORAGE_URL", pg_optuna_url)
    reset_settings_caches()
    from sqlalchemy import create_engine, text

    from core.models import Base

    engine = create_engine(pg_url)
    with engine.begin() as conn:  # a fresh schema per test in the session's database
        Base.metadata.drop_all(conn)
        conn.execute(text("SELECT 1"))
        Base.metadata.create_all(conn)
    engine.dispose()
    yield pg_url
    reset_settings_caches()


def reset_settings_caches() -> None:
    from core.config import get_settings
    from core.db import get_engine

    get_settings.cache_clear()
    get_engine.cache_clear()


def _tick_and_execute(study_id: int, seconds: float) -> int:
    from test_scheduler import execute

    from core.db import session_scope
    from core.models import SearchStudy
    from search.scheduler import tick

    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        queue: list[int] = []
        tick(study_id, dispatch=queue.append)
        with session_scope() as s:
            if s.get(SearchStudy, study_id).status != "running":
                return done
        for run_id in queue:
            done += execute(run_id) != "skipped"
        time.sleep(0.05)
    return -1


def test_concurrent_ticks_on_postgres_give_distinct_trials(pg_env) -> None:  # type: ignore[no-untyped-def]
    from test_scheduler import trials_of

    from core.db import session_scope
    from core.models import SearchStudy
    from search import study as ostudy
    from search.scheduler import StudySpec, create_study

    with session_scope() as s:
        sid = create_study(
            s,
            StudySpec(
                space=SPACE, steps=12, n_trials=10, parallelism=4, seeds=[0], sampler="tpe", seed=2
            ),
        ).id
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_tick_and_execute, [(sid, 120.0), (sid, 120.0)])
    assert -1 not in results and sum(results) >= 10
    trials = trials_of(sid)
    assert sorted(t.number for t in trials) == list(range(10))
    assert all(t.status != "running" and t.runs for t in trials)
    with session_scope() as s:
        study = s.get(SearchStudy, sid)
        assert study.status == "completed"
        name = study.optuna_study_name
    states = ostudy.trial_states(ostudy.open_study(name, ["val_loss", "state_bytes_per_param"]))
    assert len(states) == 10 and "RUNNING" not in states.values()


# ------------------------------------------------------------------------------------------
# real workers (service fixtures: service_env, migrated_db, start_worker)
# ------------------------------------------------------------------------------------------


def _service(request, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPTFORGE_LEASE_SECONDS", "6")
    monkeypatch.setenv("OPTFORGE_REAPER_INTERVAL_S", "2")
    try:
        request.getfixturevalue("service_env")
        request.getfixturevalue("migrated_db")
        start = request.getfixturevalue("start_worker")
    except pytest.FixtureLookupError as exc:
        unavailable(f"service fixtures not available: {exc.argname}")
    try:
        import workers.tasks  # noqa: F401
    except ImportError as exc:
        unavailable(f"workers.tasks not importable: {exc}")
    return start


def _wait_study(study_id: int, timeout_s: float, on_poll=None) -> dict:  # type: ignore[no-untyped-def]
    from core.db import session_scope
    from search.scheduler import tick
    from search.study_view import study_detail

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tick(study_id)  # what the reaper's periodic study_tick does
        with session_scope() as s:
            detail = study_detail(s, study_id)
        if on_poll:
            on_poll(detail)
        if detail["status"] != "running":
            return detail
        time.sleep(2)
    raise AssertionError(f"study {study_id} not finished: {detail['progress']}")


def _api_detail(study_id: int) -> dict:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from api.routes.studies import router

    app = FastAPI()
    app.include_router(router, prefix="/v1")
    with TestClient(app) as client:
        body = client.get(f"/v1/studies/{study_id}").json()
        body["trials"] = client.get(f"/v1/studies/{study_id}/trials").json()
    return body


def _new(n_trials: int) -> int:
    from core.db import session_scope
    from search.scheduler import StudySpec, create_study, tick

    with session_scope() as s:
        sid = create_study(
            s,
            StudySpec(
                space=SPACE,
                workload="synthetic-lm",
                steps=40,
                n_trials=n_trials,
                parallelism=2,
                seed=0,
            ),
        ).id
    tick(sid)
    return sid


def test_study_with_two_real_workers(request, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    start = _service(request, monkeypatch)
    start()
    start()
    sid = _new(8)
    _wait_study(sid, 540)
    body = _api_detail(sid)
    assert body["status"] == "completed" and body["progress"]["asked"] == 8
    assert body["pareto_front"] and all(t["recipe"] for t in body["pareto_front"])
    assert all(t["status"] != "running" and t["runs"] for t in body["trials"])


def test_killed_worker_trial_failed_or_retried(request, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    start = _service(request, monkeypatch)
    victim = start()
    start()
    sid = _new(8)
    killed: list[int] = []

    def kill_once(detail: dict) -> None:
        running = [
            r for t in _api_detail(sid)["trials"] for r in t["runs"] if r["status"] == "running"
        ]
        if running and not killed:
            pid = getattr(victim, "pid", None) or victim.proc.pid
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            start()

    _wait_study(sid, 540, on_poll=kill_once)
    body = _api_detail(sid)
    assert killed and body["progress"]["asked"] == 8
    assert all(t["status"] in ("complete", "pruned", "failed") for t in body["trials"])
