"""``optforge keys create``, ``optforge submit [--wait]`` and ``optforge serve`` wiring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from core.models import ApiKey, Run
from optforge.cli import app

runner = CliRunner()


def test_keys_create_prints_a_working_key(client: TestClient) -> None:
    result = runner.invoke(app, ["keys", "create", "--name", "alice"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[0]
    from core.db import session_scope
    from records.api_keys import hash_key

    with session_scope() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.name == "alice")).one()
        assert row.key_hash == hash_key(key)
    r = client.post("/v1/runs/1/cancel", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 404  # authorised; the run just does not exist
    dup = runner.invoke(app, ["keys", "create", "--name", "alice"])
    assert dup.exit_code == 2 and "already exists" in dup.output
    listed = runner.invoke(app, ["keys", "list"])
    assert "alice" in listed.stdout and key not in listed.stdout
    assert runner.invoke(app, ["keys", "revoke", "--name", "alice"]).exit_code == 0
    r = client.post("/v1/runs/1/cancel", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403


def _finish(run_id: int, _queue: str = "cpu") -> None:
    """What a worker would record: a succeeded run with a loss that depends on the seed."""
    from core.db import session_scope

    with session_scope() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.status = "succeeded"
        run.final_val_loss = 2.0 + 0.1 * run.seed
        run.state_bytes_per_param = 8.0
        run.tokens_per_s = 1000.0


def test_submit_wait_prints_leaderboard(
    client: TestClient, auth: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    import core.broker

    monkeypatch.setattr(core.broker, "send_run", _finish)

    def fake_client(base_url: str, headers: dict[str, str], timeout: float) -> Any:
        assert base_url == "http://api.test" and headers["Authorization"] == auth["Authorization"]
        return TestClient(client.app, base_url=base_url, headers=headers)

    monkeypatch.setattr(httpx, "Client", fake_client)
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps table cells on narrow terminals
    spec = tmp_path / "spec.yaml"
    spec.write_text("recipes: [adamw]\nworkload: synthetic-lm\nsteps: 8\nseeds: [0, 1]\n")
    key = auth["Authorization"].split()[1]
    args = ["submit", str(spec), "--api", "http://api.test", "--key", key, "--poll-s", "0.01"]
    result = runner.invoke(app, [*args, "--wait"])
    assert result.exit_code == 0, result.output
    assert "2 runs" in result.output and "2 succeeded" in result.output
    assert "adamw" in result.output and "2.0500 ± 0.0707" in result.output
    assert "(http://api.test/experiments/1)" in result.output  # the page, not the JSON
    one = tmp_path / "one.yaml"
    one.write_text("recipes: [sinkgd]\nworkload: synthetic-lm\nsteps: 8\nseeds: [0]\n")
    single = runner.invoke(app, ["submit", str(one), *args[2:], "--wait"])
    assert single.exit_code == 0, single.output
    row = next(ln for ln in single.output.splitlines() if "sinkgd" in ln)
    assert "2.0000" in row and "±" not in row  # one seed: no "± 0"

    bad = tmp_path / "bad.yaml"
    bad.write_text("recipes: [nope]\nworkload: synthetic-lm\n")
    result = runner.invoke(app, ["submit", str(bad), "--api", "http://api.test", "--key", key])
    assert result.exit_code == 1 and "recipes.0.preset" in result.output
    assert "adamw" in result.output  # the valid names are listed


def test_serve_runs_uvicorn_factory(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: seen.update(target=target, **kw))
    result = runner.invoke(app, ["serve", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert seen["target"] == "api.main:create_app" and seen["factory"] is True
    assert seen["port"] == 8123 and seen["host"] == "127.0.0.1"
