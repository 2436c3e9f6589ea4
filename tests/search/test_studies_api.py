"""/v1/studies on the embedded default (SQLite), runs finished by the synthetic executor."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_scheduler import CRAFTED_SPACE, drive, execute

from api.routes.studies import send_first_tick as REAL_SEND_FIRST_TICK
from core.models import Base


@pytest.fixture
def client(data_dir, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPTFORGE_AUTH_MODE", "off")
    from core.config import get_settings
    from core.db import get_engine

    get_settings.cache_clear()
    get_engine.cache_clear()

    Base.metadata.create_all(get_engine())
    import api.routes.studies as routes
    from api.errors import install_handlers
    from search.scheduler import tick

    sent: list[int] = []
    # the API sends optforge.study_tick by name; here the first tick runs in-process instead
    monkeypatch.setattr(routes, "send_first_tick", lambda sid: tick(sid, dispatch=sent.append))
    app = FastAPI()
    install_handlers(app)
    app.include_router(routes.router, prefix="/v1")
    with TestClient(app) as c:
        c.sent = sent  # type: ignore[attr-defined]
        yield c


def test_study_lifecycle_over_http(client) -> None:  # type: ignore[no-untyped-def]
    body = {
        "space": CRAFTED_SPACE,
        "workload": "synthetic-lm",
        "steps": 12,
        "n_trials": 5,
        "parallelism": 2,
        "seeds": [0],
        "sampler": "random",
        "seed": 1,
        "pruning": False,
    }
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["progress"]["running"] == 2 and len(client.sent) == 2
    for run_id in client.sent:
        execute(run_id)
    drive(sid)
    detail = client.get(f"/v1/studies/{sid}").json()
    assert detail["status"] == "completed" and detail["progress"]["complete"] == 5
    front = detail["pareto_front"]
    assert front and all(t["recipe"]["design"]["norms"] for t in front)
    # with state bytes equal, the front is the single lowest-loss trial (ties kept)
    best = min(t["values"][0] for t in detail["best_trials"])
    assert {t["values"][0] for t in front} == {best}
    trials = client.get(f"/v1/studies/{sid}/trials").json()
    assert len(trials) == 5 and all(len(t["runs"]) == 1 for t in trials)
    assert all(t["status"] != "running" for t in trials)
    assert [s["id"] for s in client.get("/v1/studies").json()] == [sid]


def test_bad_spec_and_cancel_and_404(client) -> None:  # type: ignore[no-untyped-def]
    bad = client.post("/v1/studies", json={"space": {"norms": {"sequences": [["x"]]}, "lr": [1]}})
    assert bad.status_code == 422 and "unknown value" in bad.text
    assert bad.json()["errors"][0]["field"].startswith("body.space")
    extra = client.post("/v1/studies", json={"n_trials": 2, "bogus": 1})
    assert extra.status_code == 422
    # values no column can store, or no worker serves, are 422s naming the field (not 500s)
    out_of_range = [("seed", 2**70), ("seed", -1), ("seeds", [2**40]), ("seeds", [-5]),
                    ("queue", "bogus"), ("name", "x" * 201)]  # fmt: skip
    for field, value in out_of_range:
        r = client.post("/v1/studies", json={"n_trials": 2, "steps": 12, field: value})
        assert r.status_code == 422, (field, value, r.text)
        assert r.json()["errors"][0]["field"] == f"body.{field}"
    assert client.get("/v1/studies").json() == []
    r = client.post("/v1/studies", json={"space": CRAFTED_SPACE, "steps": 12, "n_trials": 3})
    sid = r.json()["id"]
    c = client.post(f"/v1/studies/{sid}/cancel")
    assert c.status_code == 200 and c.json()["status"] == "cancelled"
    r2 = client.post("/v1/studies", json={"space": CRAFTED_SPACE, "steps": 12, "n_trials": 3})
    newest_first = [s["id"] for s in client.get("/v1/studies").json()]
    assert newest_first == [r2.json()["id"], sid]
    page = client.get("/v1/studies", params={"limit": 1, "offset": 1}).json()
    assert [s["id"] for s in page] == [sid]
    assert client.get("/v1/studies/999").status_code == 404
    assert client.get("/v1/studies/999/trials").status_code == 404


def test_writes_need_a_key_by_default(client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPTFORGE_AUTH_MODE", "writes")
    from core.config import get_settings

    get_settings.cache_clear()
    r = client.post("/v1/studies", json={"n_trials": 2})
    assert r.status_code == 401
    assert client.get("/v1/studies").status_code == 200


def test_study_is_created_when_the_broker_is_down(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import api.routes.studies as routes
    import core.broker

    def down(study_id: int) -> None:
        raise ConnectionError("broker unreachable")

    # the real send_first_tick, with a broker that refuses connections
    monkeypatch.setattr(routes, "send_first_tick", REAL_SEND_FIRST_TICK)
    monkeypatch.setattr(core.broker, "dispatch_study_tick", down)
    r = client.post("/v1/studies", json={"space": CRAFTED_SPACE, "steps": 12, "n_trials": 2})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "running" and r.json()["progress"]["asked"] == 0
