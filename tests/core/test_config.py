"""Settings: defaults of the embedded mode and OPTFORGE_* overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Settings


def test_embedded_defaults_live_in_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path / 'optforge.db'}"
    assert s.broker_url.startswith("sqla+sqlite:///") or s.broker_url.startswith("filesystem")
    assert s.optuna_storage_url != s.database_url  # Optuna never shares our database
    assert s.cache_dir == tmp_path / "cache"
    assert s.embedded


def test_env_vars_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPTFORGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OPTFORGE_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("OPTFORGE_BROKER_URL", "redis://h:6379/0")
    monkeypatch.setenv("OPTFORGE_MAX_STEPS", "123")
    monkeypatch.setenv("OPTFORGE_AUTH_MODE", "all")
    s = Settings()
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert s.broker_url == "redis://h:6379/0"
    assert s.max_steps == 123
    assert s.auth_mode == "all"
    assert not s.embedded


def test_invalid_auth_mode_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTFORGE_AUTH_MODE", "sometimes")
    with pytest.raises(ValueError, match="auth_mode"):
        Settings()
