"""kill -9 a real worker mid-run: the run completes exactly once on another worker.

Postgres + Redis + real ``optforge worker`` processes. The killed attempt's lease expires, the
surviving worker's reaper re-queues and re-dispatches the run, and the second attempt trains it:
one succeeded run, attempts == 2, no duplicate metric rows.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from integration.fixtures_service import run_rows, submit, wait_for_runs

pytestmark = pytest.mark.integration


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process in process group ``pgid`` (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.fixture
def fast_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTFORGE_LEASE_SECONDS", "4")
    monkeypatch.setenv("OPTFORGE_REAPER_INTERVAL_S", "1")
    monkeypatch.setenv("OPTFORGE_MAX_ATTEMPTS", "3")


def test_killed_worker_run_completes_exactly_once(
    fast_leases: None, service_env, migrated_db, start_worker
) -> None:  # type: ignore[no-untyped-def]
    victim = start_worker()
    (run_id,) = submit(
        {"recipes": ["adamw"], "workload": "synthetic-lm", "steps": 1200, "seeds": [0]}
    )
    rows = wait_for_runs(
        [run_id], 120, lambda r: r["status"] == "running" and r["metrics"] > 0, [victim]
    )
    assert rows[0]["attempts"] == 1
    victim.kill(signal.SIGKILL)
    deadline = time.monotonic() + 10  # its pool process dies with it (PR_SET_PDEATHSIG)
    while _group_alive(victim.pid):
        assert time.monotonic() < deadline, "the killed worker's pool process kept running"
        time.sleep(0.2)
    assert run_rows([run_id])[0]["status"] == "running"  # nobody knows yet: lease still valid
    rescuer = start_worker()
    (row,) = wait_for_runs([run_id], 240, workers=[rescuer])
    assert row["status"] == "succeeded", row
    assert row["attempts"] == 2
    assert row["metrics"] == row["distinct_steps"] > 0
    assert f"train_run {run_id} attempt 2: succeeded" in rescuer.log()
