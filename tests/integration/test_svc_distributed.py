"""Multi-process runs through the service: POST ``gpus: 2, parallel: fsdp`` on the cpu queue.

Postgres + Redis + a real ``optforge worker``: the worker launches the run under torchrun (two
gloo ranks), the run succeeds with the one-process run's final loss (within 1e-4 relative), and
a rank killed mid-run fails that attempt at once; the run is queued again and the next attempt
succeeds.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from integration.fixtures_service import wait_for_runs
from procs import rank_pid

pytestmark = pytest.mark.integration

STEPS = 30


def _post(api_client: Any, api_key: str, steps: int) -> list[int]:
    spec = {
        "recipes": ["adamw"],
        "workload": "synthetic-lm",
        "steps": steps,
        "seeds": [0],
        "queue": "cpu",
        "gpus": 2,
        "parallel": "fsdp",
    }
    resp = api_client.post(
        "/v1/experiments", json=spec, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert resp.status_code == 202, resp.text
    return [r["id"] for r in resp.json()["runs"]]


def _layout(run_id: int) -> tuple[int, str, dict[str, Any]]:
    from core.db import session_scope
    from core.models import Run

    with session_scope() as s:
        run = s.get_one(Run, run_id)
        return run.gpus, run.parallel, dict(run.env or {})


def test_fsdp_run_matches_one_process(service_env, api_client, api_key, start_worker) -> None:  # type: ignore[no-untyped-def]
    import optim_core
    from workers.train import run_workload

    worker = start_worker()
    (run_id,) = _post(api_client, api_key, STEPS)
    (row,) = wait_for_runs([run_id], 300, workers=[worker])
    assert row["status"] == "succeeded", row
    gpus, parallel, env = _layout(run_id)
    assert (gpus, parallel) == (2, "fsdp")
    assert env["world_size"] == 2 and env["parallel"] == "fsdp"
    one = run_workload("synthetic-lm", optim_core.presets.get("adamw"), STEPS, 0, None, "cpu")
    assert row["final_val_loss"] == pytest.approx(one.final_val_loss, rel=1e-4)
    assert row["metrics"] == row["distinct_steps"] > 0


def test_killed_rank_fails_the_attempt_and_the_run_is_retried(
    service_env, api_client, api_key, start_worker
) -> None:  # type: ignore[no-untyped-def]
    worker = start_worker()
    (run_id,) = _post(api_client, api_key, 400)
    wait_for_runs([run_id], 300, lambda r: r["metrics"] > 0, [worker])
    pid = rank_pid(1, ancestor=worker.pid)
    assert pid is not None, worker.log()[-3000:]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    (row,) = wait_for_runs([run_id], 120, lambda r: r["attempts"] >= 2, [worker])
    assert time.monotonic() - killed_at < 60
    (row,) = wait_for_runs([run_id], 600, workers=[worker])
    assert row["status"] == "succeeded", row
    assert row["attempts"] == 2
    assert f"train_run {run_id} attempt 1: requeued" in worker.log()
