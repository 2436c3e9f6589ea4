"""Owners are kept apart: cancel only by the owner or an admin key; idempotency keys per owner."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

SPEC = {"recipes": ["adamw"], "workload": "synthetic-lm", "steps": 20, "seeds": [0, 1]}


def _key(name: str, admin: bool = False) -> dict[str, str]:
    from core.db import session_scope
    from records.api_keys import create_api_key

    with session_scope() as session:
        return {"Authorization": f"Bearer {create_api_key(session, name, admin=admin)}"}


@pytest.fixture
def keys(client: TestClient) -> dict[str, dict[str, str]]:
    return {"alice": _key("alice"), "bob": _key("bob"), "root": _key("root", admin=True)}


def _submit(client: TestClient, headers: dict[str, str], idem: str | None = None) -> Any:
    extra = {"Idempotency-Key": idem} if idem else {}
    r = client.post("/v1/experiments", json=SPEC, headers={**headers, **extra})
    assert r.status_code == 202, r.text
    return r.json()


def test_run_cancel_needs_owner_or_admin(client: TestClient, keys: dict[str, Any]) -> None:
    exp = _submit(client, keys["alice"])
    first, second = (run["id"] for run in exp["runs"])
    r = client.post(f"/v1/runs/{first}/cancel", headers=keys["bob"])
    assert r.status_code == 403, r.text
    assert "belongs to another key" in r.json()["detail"]
    assert client.get(f"/v1/runs/{first}").json()["status"] == "queued"
    r = client.post(f"/v1/runs/{first}/cancel", headers=keys["alice"])
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    r = client.post(f"/v1/runs/{second}/cancel", headers=keys["root"])
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert client.post("/v1/runs/999/cancel", headers=keys["bob"]).status_code == 404


def test_experiment_cancel_needs_owner_or_admin(client: TestClient, keys: dict[str, Any]) -> None:
    exp = _submit(client, keys["alice"])
    r = client.post(f"/v1/experiments/{exp['id']}/cancel", headers=keys["bob"])
    assert r.status_code == 403, r.text
    r = client.post(f"/v1/experiments/{exp['id']}/cancel", headers=keys["alice"])
    assert r.status_code == 200, r.text
    assert {run["status"] for run in r.json()["runs"]} == {"cancelled"}
    other = _submit(client, keys["bob"])
    r = client.post(f"/v1/experiments/{other['id']}/cancel", headers=keys["root"])
    assert r.status_code == 200 and r.json()["counts"] == {"cancelled": 2}, r.text
    assert client.post("/v1/experiments/99/cancel", headers=keys["root"]).status_code == 404


def test_study_cancel_needs_owner_or_admin(
    client: TestClient, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.broker

    monkeypatch.setattr(core.broker, "dispatch_study_tick", lambda sid: None)
    body = {"workload": "synthetic-lm", "steps": 10, "n_trials": 2, "parallelism": 1}
    r = client.post("/v1/studies", json=body, headers=keys["alice"])
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert client.post(f"/v1/studies/{sid}/cancel", headers=keys["bob"]).status_code == 403
    assert client.get(f"/v1/studies/{sid}").json()["status"] == "running"
    r = client.post(f"/v1/studies/{sid}/cancel", headers=keys["root"])
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text


def test_idempotency_keys_are_per_owner(client: TestClient, keys: dict[str, Any]) -> None:
    first = _submit(client, keys["alice"], idem="same")
    again = _submit(client, keys["alice"], idem="same")
    assert again["id"] == first["id"]
    theirs = _submit(client, keys["bob"], idem="same")
    assert theirs["id"] != first["id"] and theirs["owner"] == "bob"
    assert {run["status"] for run in theirs["runs"]} == {"queued"}
    # a different spec under bob's key conflicts with bob's experiment only
    r = client.post(
        "/v1/experiments",
        json={**SPEC, "seeds": [3]},
        headers={**keys["bob"], "Idempotency-Key": "same"},
    )
    assert r.status_code == 409 and str(theirs["id"]) in r.json()["detail"], r.text


def test_keys_create_admin_cli(client: TestClient) -> None:
    from sqlalchemy import select
    from typer.testing import CliRunner

    from core.db import session_scope
    from core.models import ApiKey
    from optforge.cli import app

    result = CliRunner().invoke(app, ["keys", "create", "--name", "ops", "--admin"])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(app, ["keys", "create", "--name", "dev"]).exit_code == 0
    with session_scope() as session:
        admins = dict(session.execute(select(ApiKey.name, ApiKey.is_admin)).all())
    assert admins == {"ops": True, "dev": False}
    listed = CliRunner().invoke(app, ["keys", "list"]).output
    assert "\tadmin\t" in listed and "\tuser\t" in listed
