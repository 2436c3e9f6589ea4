"""API keys: hashed storage, 401 / 403 / 200 per auth mode, reads public by default."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.models import ApiKey

SPEC = {"recipes": ["adamw"], "workload": "synthetic-lm", "steps": 5}


def test_key_is_stored_hashed(client: TestClient, key: str) -> None:
    from core.db import session_scope
    from records.api_keys import hash_key

    with session_scope() as session:
        row = session.scalars(select(ApiKey)).one()
    assert row.name == "tester" and row.key_hash == hash_key(key) and key not in row.key_hash
    assert key.startswith(row.prefix) and len(key) > 30
    with session_scope() as session, pytest.raises(ValueError, match="already exists"):
        from records.api_keys import create_api_key

        create_api_key(session, "tester")


def test_writes_need_a_valid_key(client: TestClient, key: str) -> None:
    none = client.post("/v1/experiments", json=SPEC)
    assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    assert "API key" in none.json()["detail"]
    wrong = client.post("/v1/experiments", json=SPEC, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    basic = client.post("/v1/experiments", json=SPEC, headers={"Authorization": f"Basic {key}"})
    assert basic.status_code == 401
    assert client.post("/v1/runs/1/cancel").status_code == 401
    # reads stay public in the default mode
    assert client.get("/v1/leaderboard").status_code == 200
    assert client.get("/v1/workloads").status_code == 200
    assert client.get("/v1/experiments").status_code == 200


def test_valid_and_revoked_keys(client: TestClient, key: str, sent: list) -> None:
    ok = client.post("/v1/experiments", json=SPEC, headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 202, ok.text
    assert ok.json()["owner"] == "tester" and len(sent) == 1
    alt = client.post("/v1/experiments", json=SPEC, headers={"X-API-Key": key})
    assert alt.status_code == 202
    from core.db import session_scope
    from core.models import utcnow

    with session_scope() as session:
        session.scalars(select(ApiKey)).one().revoked_at = utcnow()
    revoked = client.post("/v1/experiments", json=SPEC, headers={"Authorization": f"Bearer {key}"})
    assert revoked.status_code == 403 and "revoked" in revoked.json()["detail"]


def test_mode_all_guards_reads(client_for: Callable[[str], TestClient]) -> None:
    from core.db import session_scope
    from records.api_keys import create_api_key

    c = client_for("all")
    with session_scope() as session:
        key = create_api_key(session, "reader")
    assert c.get("/v1/leaderboard").status_code == 401
    assert c.get("/v1/runs/1").status_code == 401
    assert c.get("/v1/leaderboard", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert c.get("/v1/health").json()["auth_mode"] == "all"


def test_mode_off_needs_no_key(open_client: TestClient, sent: list) -> None:
    r = open_client.post("/v1/experiments", json=SPEC)
    assert r.status_code == 202 and r.json()["owner"] is None
