"""Flush Redis while runs are queued: the reaper re-dispatches them and they complete."""

from __future__ import annotations

import pytest
from integration.fixtures_service import submit, wait_for_runs

pytestmark = pytest.mark.integration


def test_lost_messages_are_redispatched(
    monkeypatch: pytest.MonkeyPatch, service_env, migrated_db, start_worker
) -> None:  # type: ignore[no-untyped-def]
    import redis

    monkeypatch.setenv("OPTFORGE_REAPER_INTERVAL_S", "1")
    monkeypatch.setenv("OPTFORGE_REDISPATCH_AFTER_S", "3")
    client = redis.Redis.from_url(service_env["OPTFORGE_BROKER_URL"])
    ids = submit(
        {"recipes": ["adamw", "sinkgd"], "workload": "synthetic-lm", "steps": 30, "seeds": [0]}
    )
    assert client.llen("cpu") == 2  # the messages are in Redis ...
    client.flushdb()  # ... and now they are gone
    assert client.llen("cpu") == 0
    worker = start_worker()
    rows = wait_for_runs(ids, 180, workers=[worker])
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"], rows
    assert all(r["attempts"] == 1 and r["metrics"] > 0 for r in rows)
