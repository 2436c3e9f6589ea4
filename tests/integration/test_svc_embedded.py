"""The embedded ``optforge up``: SQLite + the local broker + one worker, no Redis/Postgres.

Starts the real command as a subprocess, submits an experiment over HTTP, waits for every run to
succeed, then stops it with Ctrl-C (SIGINT) and checks the worker went with it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from integration.fixtures_service import REPO, wait_until, worker_env

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(check, timeout_s: float, what: str, log: Path):  # type: ignore[no-untyped-def]
    return wait_until(check, timeout_s, what, lambda: log.read_text()[-8000:])


def _key(data_dir: Path) -> str:
    from core.db import session_scope
    from migrations.runner import upgrade
    from records.api_keys import create_api_key

    upgrade()
    with session_scope() as s:
        return create_api_key(s, "embedded-test")


def _start_up(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The real ``optforge up`` on a free port with the embedded default (no servers)."""
    port = _free_port()
    env = worker_env({"OPTFORGE_REAPER_INTERVAL_S": "2", "OPTFORGE_DATA_DIR": str(data_dir)})
    for var in ("OPTFORGE_DATABASE_URL", "OPTFORGE_BROKER_URL", "OPTFORGE_OPTUNA_STORAGE_URL"):
        env.pop(var, None)
    argv = [sys.executable, "-c", "from optforge.cli import main; main()", "up"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, port


def _worker_pid(log: Path) -> int | None:
    found = re.search(r"optforge-(\d+)@", log.read_text())
    return int(found.group(1)) if found else None


def _stop_and_check(proc: subprocess.Popen[bytes], worker_pid: int, sig: int, log: Path) -> None:
    """Send ``sig`` to ``optforge up``; it must exit and take its worker with it."""
    assert _alive(worker_pid)
    proc.send_signal(sig)
    proc.wait(timeout=60)  # raises TimeoutExpired if `optforge up` does not exit
    _wait(lambda: not _alive(worker_pid), 30, "worker stopped", log)
    assert "optforge up: stopped" in log.read_text()


def _kill_leftovers(proc: subprocess.Popen[bytes], worker_pid: int | None) -> None:
    for pid in (proc.pid, worker_pid):
        if pid and _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_optforge_up_stops_its_worker_on_sigterm(data_dir: Path, tmp_path: Path) -> None:
    """``docker stop`` / systemd send SIGTERM: the worker must not be left behind."""
    log = tmp_path / "up.log"
    proc, _port = _start_up(data_dir, log)
    worker_pid = None
    try:
        worker_pid = _wait(lambda: _worker_pid(log), 120, "worker ready", log)
        _stop_and_check(proc, worker_pid, signal.SIGTERM, log)
    finally:
        _kill_leftovers(proc, worker_pid)


def test_optforge_up_runs_an_experiment_without_servers(data_dir: Path, tmp_path: Path) -> None:
    key = _key(data_dir)
    log = tmp_path / "up.log"
    proc, port = _start_up(data_dir, log)
    base = f"http://127.0.0.1:{port}"
    worker_pid: int | None = None
    try:
        with httpx.Client(base_url=base, timeout=30) as http:

            def healthy() -> dict | None:  # type: ignore[type-arg]
                try:
                    r = http.get("/v1/health")
                except httpx.TransportError:
                    return None
                return r.json() if r.status_code == 200 else None

            health = _wait(healthy, 120, "API health", log)
            assert health["embedded"] is True and health["backend"] == "sqlite"
            assert f"API at http://127.0.0.1:{port}" in log.read_text()
            spec = {"recipes": ["adamw", "sinkgd"], "workload": "synthetic-lm", "steps": 30}
            r = http.post("/v1/experiments", json=spec, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 202, r.text
            exp_id = r.json()["id"]

            def finished() -> dict | None:  # type: ignore[type-arg]
                body = http.get(f"/v1/experiments/{exp_id}").json()
                return body if body["status"] == "finished" else None

            body = _wait(finished, 240, "experiment finished", log)
            assert [run["status"] for run in body["runs"]] == ["succeeded", "succeeded"]
            metrics = http.get(f"/v1/runs/{body['runs'][0]['id']}/metrics").json()
            assert metrics["run_id"] == body["runs"][0]["id"] and metrics["points"]
        worker_pid = _worker_pid(log)
        assert worker_pid, log.read_text()[-4000:]
        _stop_and_check(proc, worker_pid, signal.SIGINT, log)  # Ctrl-C
    finally:
        _kill_leftovers(proc, worker_pid)
