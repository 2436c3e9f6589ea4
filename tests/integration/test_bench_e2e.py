"""A benchmark on PostgreSQL + Redis with real worker processes, one of them killed mid-run.

The benchmark is created and handed to the workers by name (``optforge.benchmark_tick``), as
``POST /v1/benchmarks`` does; the workers' ticks drive the tuning sub-studies and confirmation
seeds. A worker is SIGKILLed while it trains a benchmark run: the reaper re-queues the run, a
new worker finishes it, and the benchmark still completes with every cell's full budget.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
from integration.fixtures_service import wait_until
from procs import descends_from

pytestmark = pytest.mark.integration

SPEC: dict[str, Any] = {
    "workload": "synthetic-lm",
    "baseline": "adamw",
    "recipes": ["sinkgd"],
    "horizons": [20, 600],
    "seeds": [1, 2, 3],
    "tuning": {"budget": 2, "seed": 0, "parallelism": 2},
}


@pytest.fixture
def fast_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTFORGE_LEASE_SECONDS", "4")
    monkeypatch.setenv("OPTFORGE_REAPER_INTERVAL_S", "1")
    monkeypatch.setenv("OPTFORGE_MAX_ATTEMPTS", "3")


def _start() -> int:
    from core.broker import dispatch_benchmark_tick
    from core.db import session_scope
    from search.bench_scheduler import create_benchmark
    from search.bench_spec import BenchmarkSpec

    with session_scope() as session:
        bid = create_benchmark(session, BenchmarkSpec.model_validate(SPEC)).id
    dispatch_benchmark_tick(bid)
    return bid


def _running_long_run(worker_pid: int) -> int | None:
    """A running 600-step benchmark run with curve points, trained by a pool process of the
    worker ``worker_pid`` (lease owners are ``host:pid:suffix``), so killing that worker is
    sure to interrupt it."""
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import Run, RunMetric

    with session_scope() as s:
        rows = s.execute(
            select(Run.id, Run.lease_owner)
            .join(RunMetric, RunMetric.run_id == Run.id)
            .where(Run.status == "running", Run.steps == 600, Run.benchmark_cell_id.is_not(None))
            .distinct()
        ).all()
    for run_id, owner in rows:
        if owner and descends_from(int(owner.split(":")[1]), worker_pid, depth=1):
            return int(run_id)
    return None


def _wait(predicate: Any, timeout_s: float, what: str, workers: list[Any]) -> Any:
    return wait_until(
        predicate, timeout_s, what, lambda: "\n".join(w.log()[-4000:] for w in workers)
    )


def _report(bid: int) -> dict[str, Any]:
    from core.db import session_scope
    from records.bench_report import report

    with session_scope() as s:
        return report(s, bid)


def test_benchmark_survives_a_killed_worker(
    fast_leases: None, service_env: Any, migrated_db: str, start_worker: Any
) -> None:
    victim, other = start_worker(), start_worker()
    bid = _start()
    run_id = _wait(
        lambda: _running_long_run(victim.pid), 180, "a running 600-step run", [victim, other]
    )
    victim.kill(signal.SIGKILL)
    rescuer = start_worker()
    workers = [victim, other, rescuer]
    _wait(lambda: _report(bid)["status"] == "completed", 420, "benchmark completed", workers)
    rep = _report(bid)
    assert {c["phase"] for c in rep["cells"]} == {"done"}
    assert all(c["tuning"]["trials"] == c["tuning"]["told"] == 2 for c in rep["cells"])
    assert all(len(c["final_val_loss"]) == 3 for c in rep["cells"])
    from integration.fixtures_service import run_rows

    (row,) = run_rows([run_id])
    assert row["status"] == "succeeded" and row["attempts"] >= 2, row
    assert row["metrics"] == row["distinct_steps"]
