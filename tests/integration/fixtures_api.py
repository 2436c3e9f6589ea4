"""API fixtures for tests against real services (loaded by tests/conftest.py).

* ``api_db``: settings pointing at the migrated Postgres database of record (the service
  engineer's ``service_env`` + ``migrated_db`` when present, else ``pg_url`` migrated here).
* ``api_client``: a TestClient on ``create_app()`` for that database (auth mode ``writes``).
* ``api_key``: a valid key (plaintext) in that database.
* ``live_api``: a real ``uvicorn --factory api.main:create_app`` subprocess on a free port;
  yields its base URL and is killed at teardown.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _reset_caches() -> None:
    from core.config import get_settings
    from core.db import get_engine

    get_settings.cache_clear()
    get_engine.cache_clear()
    try:
        from core.broker import get_celery_client

        get_celery_client.cache_clear()
    except ImportError:
        pass


@pytest.fixture
def api_db(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Settings for the migrated Postgres database the API and workers share."""
    try:
        request.getfixturevalue("service_env")
        request.getfixturevalue("migrated_db")
    except pytest.FixtureLookupError:
        url = request.getfixturevalue("pg_url")
        monkeypatch.setenv("OPTFORGE_DATABASE_URL", url)
        _reset_caches()
        from core.migrate import upgrade

        upgrade(url)
    monkeypatch.setenv("OPTFORGE_AUTH_MODE", "writes")
    _reset_caches()
    from core.config import get_settings

    settings = get_settings()
    assert settings.database_url.startswith("postgresql"), settings.database_url
    yield settings
    _reset_caches()


@pytest.fixture
def api_client(api_db: Any) -> Iterator[Any]:
    """A TestClient on a fresh app bound to the migrated Postgres database."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app(api_db)) as client:
        yield client


@pytest.fixture
def api_key(api_db: Any) -> str:
    """The plaintext of a new API key (unique name per test)."""
    import uuid

    from api.deps import create_api_key
    from core.db import session_scope

    with session_scope() as session:
        return create_api_key(session, f"test-{uuid.uuid4().hex[:8]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"API at {url} not healthy after {timeout_s}s")


@pytest.fixture
def live_api(api_db: Any, tmp_path: Path) -> Iterator[str]:
    """Base URL of a real uvicorn process serving ``api.main:create_app`` (same env)."""
    port = _free_port()
    log = (tmp_path / "uvicorn.log").open("wb")
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, url, 60)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
