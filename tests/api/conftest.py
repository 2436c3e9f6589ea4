"""Fixtures of the fast API tests: a fresh migrated SQLite DB, an app, a TestClient, a key."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from integration.fixtures_service import reset_service_caches


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head (Alembic) per session; tests get a copy of it."""
    from migrations.runner import upgrade

    path = tmp_path_factory.mktemp("api-template") / "optforge.db"
    upgrade(f"sqlite:///{path}")
    return path


def _migrate(template: Path) -> None:
    from core.config import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    assert settings.database_url == f"sqlite:///{settings.data_dir / 'optforge.db'}"
    shutil.copyfile(template, settings.data_dir / "optforge.db")
    wal = template.with_name(template.name + "-wal")  # not checkpointed yet: copy it too
    if wal.exists():
        shutil.copyfile(wal, settings.data_dir / "optforge.db-wal")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Runs the API dispatched (core.broker.send_run is replaced: no broker needed)."""
    calls: list[tuple[int, str]] = []
    import core.broker

    monkeypatch.setattr(core.broker, "send_run", lambda rid, q="cpu": calls.append((rid, q)))
    return calls


def _client(template: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> Iterator[TestClient]:
    monkeypatch.setenv("OPTFORGE_AUTH_MODE", mode)
    reset_service_caches()
    _migrate(template)
    from api.main import create_app

    with TestClient(create_app()) as client:
        yield client
    reset_service_caches()


@pytest.fixture
def client_for(
    data_dir: Path, migrated_template: Path, monkeypatch: pytest.MonkeyPatch, sent: list[Any]
) -> Iterator[Callable[[str], TestClient]]:
    """A factory: auth mode -> TestClient on a fresh migrated DB (closed at teardown)."""
    gens: list[Iterator[TestClient]] = []

    def make(mode: str) -> TestClient:
        gen = _client(migrated_template, monkeypatch, mode)
        gens.append(gen)
        return next(gen)

    yield make
    for gen in gens:
        for _ in gen:
            pass


@pytest.fixture
def client(
    data_dir: Path, migrated_template: Path, monkeypatch: pytest.MonkeyPatch, sent: list[Any]
) -> Iterator[TestClient]:
    """App with auth mode ``writes`` (the default)."""
    yield from _client(migrated_template, monkeypatch, "writes")


@pytest.fixture
def open_client(
    data_dir: Path, migrated_template: Path, monkeypatch: pytest.MonkeyPatch, sent: list[Any]
) -> Iterator[TestClient]:
    """App with auth off."""
    yield from _client(migrated_template, monkeypatch, "off")


@pytest.fixture
def key(client: TestClient) -> str:
    """A valid key for ``client``'s database."""
    from core.db import session_scope
    from records.api_keys import create_api_key

    with session_scope() as session:
        return create_api_key(session, "tester")


@pytest.fixture
def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
