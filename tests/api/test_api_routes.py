"""Every /v1 route on a fresh SQLite DB: happy paths, 404s, 409s, 413 and precise 422s."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from fastapi.testclient import TestClient

from core.models import Run, RunMetric

W = "synthetic-lm"


def _post(client: TestClient, auth: dict[str, str], body: Any, **headers: str) -> Any:
    return client.post("/v1/experiments", json=body, headers={**auth, **headers})


def _set_run(run_id: int, **values: Any) -> None:
    from core.db import session_scope

    with session_scope() as session:
        run = session.get(Run, run_id)
        assert run is not None
        for k, v in values.items():
            setattr(run, k, v)


def test_health_workloads_and_openapi(client: TestClient) -> None:
    h = client.get("/v1/health")
    assert h.status_code == 200 and h.json()["database"] == "ok"
    assert h.json()["backend"] == "sqlite" and h.json()["auth_mode"] == "writes"
    ws = client.get("/v1/workloads").json()
    assert W in {w["name"] for w in ws} and all(w["n_params"] > 0 for w in ws)
    one = client.get(f"/v1/workloads/{W}").json()
    assert one["max_steps"] >= one["default_steps"] > 0
    missing = client.get("/v1/workloads/nope")
    assert missing.status_code == 404 and W in missing.json()["detail"]
    spec = client.get("/openapi.json").json()
    assert {"/v1/experiments", "/v1/leaderboard", "/v1/runs/{run_id}/cancel"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_presets_and_recipe_validation(client: TestClient) -> None:
    presets = client.get("/v1/presets").json()
    names = [p["name"] for p in presets]
    assert "adamw" in names and all(len(p["hash"]) >= 16 for p in presets)
    adamw = client.get("/v1/presets/adamw").json()
    assert adamw["recipe"] == next(p for p in presets if p["name"] == "adamw")["recipe"]
    missing = client.get("/v1/presets/nope")
    assert missing.status_code == 404 and "adamw" in missing.json()["detail"]

    ok = client.post("/v1/recipes/validate", json={"preset": "adamw", "workload": W})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["hash"] == adamw["hash"] and body["workload"] == W
    assert body["state_bytes"] > 0 and body["n_params"] > 0
    assert body["state_bytes_per_param"] == body["state_bytes"] / body["n_params"]
    same = client.post("/v1/recipes/validate", json={"recipe": adamw["recipe"]}).json()
    assert same["hash"] == adamw["hash"] and same["canonical"] == adamw["recipe"]

    unknown = client.post("/v1/recipes/validate", json={"preset": "nope"})
    assert unknown.status_code == 422
    err = unknown.json()["errors"][0]
    assert err["field"] == "body.preset" and "adamw" in err["valid"]
    bad = dict(adamw["recipe"], bogus_key=1)
    r = client.post("/v1/recipes/validate", json={"recipe": bad})
    assert r.status_code == 422 and any("bogus_key" in e["field"] for e in r.json()["errors"])
    wl = client.post("/v1/recipes/validate", json={"preset": "adamw", "workload": "nope"})
    assert wl.status_code == 422 and W in wl.json()["errors"][0]["valid"]
    both = client.post("/v1/recipes/validate", json={})
    assert both.status_code == 422 and "exactly one" in both.json()["detail"]


def test_experiment_fan_out_and_get(client: TestClient, auth: dict[str, str], sent: list) -> None:
    body = {"recipes": ["adamw", "lion"], "workload": W, "steps": 8, "seeds": [0, 1]}
    r = _post(client, auth, body)
    assert r.status_code == 202, r.text
    exp = r.json()
    assert len(exp["runs"]) == 4 and exp["status"] == "queued" and exp["counts"] == {"queued": 4}
    assert {(x["recipe_name"], x["seed"]) for x in exp["runs"]} == {
        (n, s) for n in ("adamw", "lion") for s in (0, 1)
    }
    assert sorted(rid for rid, _ in sent) == sorted(x["id"] for x in exp["runs"])
    assert {q for _, q in sent} == {"cpu"}
    got = client.get(f"/v1/experiments/{exp['id']}")
    assert got.status_code == 200 and got.json()["runs"] == exp["runs"]
    assert client.get("/v1/experiments").json()[0]["id"] == exp["id"]
    assert client.get("/v1/experiments/999").status_code == 404
    assert client.get("/v1/experiments/0").status_code == 422
    grid = _post(client, auth, {"recipes": ["adamw"], "workload": W, "lr_grid": [0.1, 0.01]})
    assert sorted(x["lr"] for x in grid.json()["runs"]) == [0.01, 0.1]
    assert grid.json()["runs"][0]["steps"] > 0  # the workload's default steps


def test_experiment_422s_name_field_and_cap(client: TestClient, auth: dict[str, str]) -> None:
    def errors(body: Any) -> list[dict[str, Any]]:
        r = _post(client, auth, body)
        assert r.status_code == 422, r.text
        assert r.json()["detail"]
        return r.json()["errors"]

    e = errors({"recipes": ["adamw"], "workload": "nope"})
    assert e[0]["field"] == "body.workload" and W in e[0]["valid"]
    e = errors({"recipes": ["adamw", "nope"], "workload": W})
    assert e[0]["field"] == "body.recipes.1.preset" and "adamw" in e[0]["valid"]
    e = errors({"recipes": ["adamw"], "workload": W, "steps": 10**9})
    assert e[0]["field"] == "body.steps" and "20000" in e[0]["msg"]
    e = errors({"recipes": ["adamw"], "workload": W, "steps": 6000})  # workload cap 5000
    assert e[0]["field"] == "body.steps" and "5000" in e[0]["msg"]
    e = errors({"recipes": ["adamw"], "workload": W, "seeds": list(range(11))})
    assert e[0]["field"] == "body.seeds" and "10" in e[0]["msg"]
    e = errors({"recipes": ["adamw"], "workload": W, "queue": "tpu"})
    assert e[0]["field"] == "body.queue" and e[0]["valid"] == ["cpu", "gpu"]
    e = errors({"recipes": ["adamw"], "workload": W, "bogus": 1})
    assert e[0]["field"] == "body.bogus" and e[0]["type"] == "extra_forbidden"
    e = errors({"recipes": ["adamw"] * 30, "workload": W, "seeds": list(range(10))})
    assert "max_runs_per_request" in e[0]["msg"]
    e = errors({"recipes": [{"recipe": {"bogus": 1}}], "workload": W})
    assert all(x["field"].startswith("body.recipes.0.recipe") for x in e)
    too_wide = {"schema": 1, "design": {"norms": ["adam"], "rank": 1000}}  # model dim is 32
    e = errors({"recipes": ["adamw", {"recipe": too_wide}], "workload": W})
    assert e[0]["field"] == "body.recipes.1" and "does not fit workload" in e[0]["msg"]
    bad_json = client.post(
        "/v1/experiments",
        content=b"{not json",
        headers={**auth, "Content-Type": "application/json"},
    )
    assert bad_json.status_code == 422


def test_idempotency_key(client: TestClient, auth: dict[str, str], sent: list) -> None:
    body = {"recipes": ["adamw"], "workload": W, "steps": 8, "seeds": [0, 1]}
    first = _post(client, auth, body, **{"Idempotency-Key": "k-1"})
    again = _post(client, auth, body, **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and len(sent) == 2
    other = _post(client, auth, {**body, "steps": 9}, **{"Idempotency-Key": "k-1"})
    assert other.status_code == 409 and "k-1" in other.json()["detail"]
    fresh = _post(client, auth, body, **{"Idempotency-Key": "k-2"})
    assert fresh.json()["id"] != first.json()["id"]


def test_identical_succeeded_run_is_reused(
    client: TestClient, auth: dict[str, str], sent: list
) -> None:
    body = {"recipes": ["adamw"], "workload": W, "steps": 8, "seeds": [0]}
    run = _post(client, auth, body).json()["runs"][0]
    _set_run(run["id"], status="succeeded", final_val_loss=2.5, state_bytes_per_param=8.0)
    again = _post(client, auth, {**body, "seeds": [0, 1]}).json()
    reused = next(x for x in again["runs"] if x["seed"] == 0)
    assert reused["status"] == "succeeded" and reused["reused_from_id"] == run["id"]
    assert reused["final_val_loss"] == 2.5 and reused["id"] not in [rid for rid, _ in sent]
    assert len(sent) == 2  # the first run and seed 1, never the reused one


def test_runs_get_metrics_cancel(client: TestClient, auth: dict[str, str]) -> None:
    body = {"recipes": ["adamw"], "workload": W, "steps": 8, "seeds": [0, 1, 2]}
    a, b, c = (x["id"] for x in _post(client, auth, body).json()["runs"])
    r = client.get(f"/v1/runs/{a}")
    assert r.status_code == 200 and r.json()["status"] == "queued" and r.json()["recipe_hash"]
    assert client.get("/v1/runs/9999").status_code == 404
    assert client.get("/v1/runs/99999999999999").status_code == 422
    from core.db import session_scope

    with session_scope() as session:
        for step in (0, 4, 8):
            session.add(RunMetric(run_id=a, step=step, tokens=step * 512, train_loss=5.0 - step))
    m = client.get(f"/v1/runs/{a}/metrics").json()
    assert [p["step"] for p in m["points"]] == [0, 4, 8] and m["points"][2]["train_loss"] == -3.0
    tail = client.get(f"/v1/runs/{a}/metrics", params={"after_step": 0}).json()
    assert [p["step"] for p in tail["points"]] == [4, 8]
    assert client.get("/v1/runs/9999/metrics").status_code == 404

    cancelled = client.post(f"/v1/runs/{a}/cancel", headers=auth)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"/v1/runs/{a}/cancel", headers=auth)
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    _set_run(b, status="running")
    asked = client.post(f"/v1/runs/{b}/cancel", headers=auth).json()
    assert asked["status"] == "running" and asked["cancel_requested"] is True
    _set_run(c, status="succeeded")
    assert client.post(f"/v1/runs/{c}/cancel", headers=auth).status_code == 409
    assert client.post("/v1/runs/9999/cancel", headers=auth).status_code == 404
    exp = client.get(f"/v1/experiments/{client.get(f'/v1/runs/{a}').json()['experiment_id']}")
    assert exp.json()["counts"] == {"cancelled": 1, "running": 1, "succeeded": 1}
    assert exp.json()["status"] == "running"


def test_oversized_body_is_413(client: TestClient, auth: dict[str, str]) -> None:
    big = {"recipes": ["adamw"], "workload": W, "name": "x" * 1_100_000}
    r = _post(client, auth, big)
    assert r.status_code == 413 and "1000000" in r.json()["detail"]

    def chunks() -> Any:  # no Content-Length: the limit applies while streaming
        for _ in range(20):
            yield b" " * 100_000

    streamed = client.post(
        "/v1/experiments", content=chunks(), headers={**auth, "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413


def test_importing_the_app_imports_no_torch() -> None:
    code = (
        "import sys; import api.main; api.main.create_app(); "
        "bad = [m for m in ('torch', 'workers', 'optim_core.optimizer') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
