"""End to end through HTTP with a real Celery worker on Postgres + Redis.

POST 2 presets x 2 seeds on synthetic-lm -> every run succeeds, curves are stored, and the
leaderboard (through a real uvicorn process) ranks the recipes with the mean ± std and Pareto
flags recomputed here from the runs themselves.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

STEPS = 30
SPEC = {
    "recipes": ["adamw", "sinkgd"],
    "workload": "synthetic-lm",
    "steps": STEPS,
    "seeds": [0, 1],
}
TERMINAL = {"succeeded", "failed", "diverged", "cancelled", "pruned"}


def _wait_experiment(client: Any, exp_id: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        exp = client.get(f"/v1/experiments/{exp_id}").json()
        if all(r["status"] in TERMINAL for r in exp["runs"]):
            return exp
        time.sleep(1.0)
    raise AssertionError(f"experiment {exp_id} not finished: {exp['counts']}")


def _dominated(row: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
    loss, sbpp = row["val_loss_mean"], row["state_bytes_per_param"]
    return any(
        o["val_loss_mean"] <= loss
        and o["state_bytes_per_param"] <= sbpp
        and (o["val_loss_mean"] < loss or o["state_bytes_per_param"] < sbpp)
        for o in rows
    )


def _submit(api_client: Any, auth: dict[str, str]) -> dict[str, Any]:
    """POST the spec: 401 without a key, 202 with one, and the same experiment on a retry."""
    assert api_client.post("/v1/experiments", json=SPEC).status_code == 401
    r = api_client.post("/v1/experiments", json=SPEC, headers={**auth, "Idempotency-Key": "e2e"})
    assert r.status_code == 202, r.text
    exp: dict[str, Any] = r.json()
    assert len(exp["runs"]) == 4 and exp["counts"] == {"queued": 4}
    again = api_client.post(
        "/v1/experiments", json=SPEC, headers={**auth, "Idempotency-Key": "e2e"}
    )
    assert again.json()["id"] == exp["id"]  # no second set of runs
    return exp


def _check_runs(api_client: Any, exp: dict[str, Any], worker: Any) -> None:
    """Every run succeeded on its first attempt and stored a curve with validation points."""
    bad = [
        (r["id"], r["status"], r["failure_reason"])
        for r in exp["runs"]
        if r["status"] != "succeeded"
    ]
    assert not bad, f"{bad}\n{worker.log()[-4000:]}"
    assert all(r["attempts"] == 1 and r["final_val_loss"] > 0 for r in exp["runs"])
    for run in exp["runs"]:
        curve = api_client.get(f"/v1/runs/{run['id']}/metrics").json()["points"]
        steps = [p["step"] for p in curve]
        assert steps == sorted(set(steps)) and steps[-1] <= STEPS and len(steps) >= 2
        assert any(p["val_loss"] is not None for p in curve)


def _live_board(live_api: str) -> dict[str, Any]:
    """The leaderboard through the live uvicorn on Postgres (which also refuses a keyless POST)."""
    with httpx.Client(base_url=live_api, timeout=10) as http:
        assert http.get("/v1/health").json()["backend"] == "postgresql"
        board: dict[str, Any] = http.get(
            "/v1/leaderboard", params={"workload": "synthetic-lm", "steps": STEPS}
        ).json()
        assert http.post("/v1/experiments", json=SPEC).status_code == 401
    return board


def _check_board(board: dict[str, Any], exp: dict[str, Any]) -> None:
    """Two recipes ranked by loss; mean ± std and Pareto flags recomputed from the runs."""
    rows = board["rows"]
    assert board["total"] == 2 and {r["name"] for r in rows} == {"adamw", "sinkgd"}
    assert rows[0]["val_loss_mean"] <= rows[1]["val_loss_mean"]
    for row in rows:
        losses = [r["final_val_loss"] for r in exp["runs"] if r["recipe_id"] == row["recipe_id"]]
        assert row["n_runs"] == 2 and len(losses) == 2
        assert row["val_loss_mean"] == pytest.approx(statistics.mean(losses), rel=1e-9)
        assert row["val_loss_std"] == pytest.approx(statistics.stdev(losses), rel=1e-6, abs=1e-12)
        assert row["state_bytes_per_param"] > 0 and row["tokens_per_s"] > 0
        assert row["pareto"] == (not _dominated(row, rows))
    assert any(r["pareto"] for r in rows)


def test_experiment_end_to_end(
    api_client: Any, api_key: str, live_api: str, start_worker: Any
) -> None:
    worker = start_worker(queues="cpu")
    exp = _submit(api_client, {"Authorization": f"Bearer {api_key}"})
    exp = _wait_experiment(api_client, exp["id"], 300)
    _check_runs(api_client, exp, worker)
    _check_board(_live_board(live_api), exp)
