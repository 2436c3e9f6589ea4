"""Studies on Postgres + Redis with real ``optforge worker`` processes (issue 6).

* concurrent ticks: two processes tick one study and execute its runs (the synthetic executor of
  tests/search/test_scheduler.py) on Postgres, Optuna in its own Postgres database: the study-row
  lock gives exactly n_trials distinct trials, none left running, and no table of one database
  appears in the other (Optuna's ``alembic_version`` vs our ``optforge_alembic_version``);
* end to end: ``POST /v1/studies`` (real app, API key) and nothing else: the first
  ``optforge.study_tick`` goes by name to 2 real workers, which train ``synthetic-lm`` runs, tick
  the study after each run and finish >= 8 trials; ``GET /v1/studies/{id}`` has the Pareto front
  with recipes, every trial is linked to its runs and none is left running;
* a worker killed (SIGKILL) mid-trial: its run is re-queued (or its trial failed with the reason)
  and the study still reaches n_trials.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "search"))

SPACE = {
    "norms": {"sequences": [["row", "col"], ["sign"], ["adam"]]},
    "momentum": {"placement": ["none", "matrices"], "beta": [0.9]},
    "lr": {"low": 1e-4, "high": 3e-2, "log": True},
}
TERMINAL_TRIALS = ("complete", "pruned", "failed")


def _tick_and_execute(study_id: int, seconds: float) -> int:
    from test_scheduler import execute, tick_queue

    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        queue = tick_queue(study_id)
        if queue is None:
            return done
        for run_id in queue:
            done += execute(run_id) != "skipped"
        time.sleep(0.05)
    return -1


def test_concurrent_ticks_on_postgres_give_distinct_trials(service_env, migrated_db) -> None:  # type: ignore[no-untyped-def]
    from integration.fixtures_service import table_names
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
        results = pool.starmap(_tick_and_execute, [(sid, 240.0), (sid, 240.0)])
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
    ours, theirs = (
        table_names(migrated_db),
        table_names(service_env["OPTFORGE_OPTUNA_STORAGE_URL"]),
    )
    assert {"search_studies", "optforge_alembic_version"} <= ours
    assert not ours & {"studies", "trials", "alembic_version", "version_info"}
    assert {"studies", "trials", "alembic_version"} <= theirs
    assert not theirs & {"search_studies", "runs", "optforge_alembic_version"}


# ------------------------------------------------------------------------------------------
# real workers: only the API and the workers drive the study (no tick from the test)
# ------------------------------------------------------------------------------------------


@pytest.fixture
def fast_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTFORGE_LEASE_SECONDS", "4")
    monkeypatch.setenv("OPTFORGE_REAPER_INTERVAL_S", "2")
    monkeypatch.setenv("OPTFORGE_MAX_ATTEMPTS", "3")


def _post_study(client: Any, key: str, n_trials: int, steps: int) -> int:
    body = {
        "space": SPACE,
        "workload": "synthetic-lm",
        "steps": steps,
        "n_trials": n_trials,
        "parallelism": 2,
        "seed": 0,
        "sampler": "tpe",
    }
    r = client.post("/v1/studies", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _wait(client: Any, sid: int, timeout_s: float, workers: list, on_poll=None) -> dict:  # type: ignore[no-untyped-def, type-arg]
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/v1/studies/{sid}").json()
        if on_poll:
            on_poll(body)
        if body["status"] != "running":
            return body
        time.sleep(1.0)
    logs = "\n".join(w.log()[-4000:] for w in workers)
    raise AssertionError(f"study {sid} not finished: {body.get('progress')}\n{logs}")


def _check_finished(client: Any, sid: int, n_trials: int) -> list[dict[str, Any]]:
    body = client.get(f"/v1/studies/{sid}").json()
    assert body["status"] == "completed", body["progress"]
    assert body["progress"]["asked"] == n_trials and body["progress"]["running"] == 0
    trials = client.get(f"/v1/studies/{sid}/trials").json()
    assert [t["number"] for t in trials] == list(range(n_trials))
    assert all(t["status"] in TERMINAL_TRIALS and t["runs"] for t in trials)
    assert all(r["status"] != "running" for t in trials for r in t["runs"])
    return trials


def _optuna_states(sid: int) -> dict[int, str]:
    from core.db import session_scope
    from core.models import SearchStudy
    from search import study as ostudy

    with session_scope() as s:
        name = s.get(SearchStudy, sid).optuna_study_name
    return ostudy.trial_states(ostudy.open_study(name, ["val_loss", "state_bytes_per_param"]))


def test_study_with_two_real_workers(fast_leases, api_client, api_key, start_worker) -> None:  # type: ignore[no-untyped-def]
    workers = [start_worker(), start_worker()]
    sid = _post_study(api_client, api_key, n_trials=8, steps=40)
    _wait(api_client, sid, 540, workers)
    trials = _check_finished(api_client, sid, 8)
    body = api_client.get(f"/v1/studies/{sid}").json()
    front = body["pareto_front"]
    assert front and all(t["status"] == "complete" and t["recipe"]["design"] for t in front)
    assert all(len(t["values"]) == 2 and t["values"][1] > 0 for t in front)
    for t in trials:  # each trial linked to its runs, values = its run's results
        run = t["runs"][-1]
        if t["status"] == "complete":
            assert t["values"][0] == pytest.approx(run["final_val_loss"])
        if t["status"] == "pruned":
            assert run["status"] == "pruned" and run["stopped_step"] == t["pruned_step"] < 40
    expect = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}
    assert _optuna_states(sid) == {t["number"]: expect[t["status"]] for t in trials}


def test_killed_worker_trial_failed_or_retried(
    fast_leases, api_client, api_key, start_worker
) -> None:  # type: ignore[no-untyped-def]
    victim = start_worker()
    workers = [victim, start_worker()]
    sid = _post_study(api_client, api_key, n_trials=8, steps=300)
    killed: list[int] = []

    def kill_once(body: dict[str, Any]) -> None:
        if killed:
            return
        trials = api_client.get(f"/v1/studies/{sid}/trials").json()
        running = [r for t in trials for r in t["runs"] if r["status"] == "running"]
        if len(running) >= 2:  # one run on each worker (concurrency 1): the victim is busy
            victim.kill(signal.SIGKILL)
            killed.append(victim.pid)
            workers.append(start_worker())

    _wait(api_client, sid, 540, workers, on_poll=kill_once)
    assert killed
    trials = _check_finished(api_client, sid, 8)
    runs = [r for t in trials for r in t["runs"]]
    lost = [t for t in trials if "worker lost" in (t["failure_reason"] or "")]
    retried = [r for r in runs if r["attempts"] >= 2]
    assert lost or retried, runs  # the killed attempt was noticed: re-queued or failed
    assert all(r["status"] != "queued" for r in runs)
