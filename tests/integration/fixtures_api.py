"""API fixtures for tests against real services (loaded by tests/conftest.py).

* ``api_db``: settings pointing at the migrated Postgres database of record (``migrated_db``,
  auth mode ``writes``).
* ``api_client``: a TestClient on ``create_app()`` for that database (auth mode ``writes``).
* ``api_key``: a valid key (plaintext) in that database.
* ``live_api``: a real ``uvicorn --factory api.main:create_app`` subprocess on a free port;
  yields its base URL and is killed at teardown.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.fixtures_service import reset_service_caches
from live_uvicorn import live_uvicorn


@pytest.fixture
def api_db(migrated_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Settings for the migrated Postgres database the API and workers share."""
    monkeypatch.setenv("OPTFORGE_AUTH_MODE", "writes")
    reset_service_caches()
    from core.config import get_settings

    settings = get_settings()
    assert settings.database_url == migrated_db, settings.database_url
    yield settings
    reset_service_caches()


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

    from core.db import session_scope
    from records.api_keys import create_api_key

    with session_scope() as session:
        return create_api_key(session, f"test-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def live_api(api_db: Any, tmp_path: Path) -> Iterator[str]:
    """Base URL of a real uvicorn process serving ``api.main:create_app`` (same env)."""
    with live_uvicorn(dict(os.environ), tmp_path / "uvicorn.log") as url:
        yield url
