"""Alembic migrations on an empty SQLite database: up to head equals core.models, down to base."""

from __future__ import annotations

from pathlib import Path

from integration.fixtures_service import APP_TABLES, schema_diff
from integration.fixtures_service import table_names as tables


def test_sqlite_upgrade_matches_models_and_downgrades(tmp_path: Path) -> None:
    from migrations.runner import VERSION_TABLE, current, downgrade, head, upgrade

    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert current(url) is None
    upgrade(url)
    assert APP_TABLES | {VERSION_TABLE} <= tables(url)
    assert "alembic_version" not in tables(url)  # Optuna owns that name
    assert current(url) == head()
    assert schema_diff(url) == []
    upgrade(url)  # idempotent
    downgrade(url, "base")
    assert tables(url) & APP_TABLES == set()
    assert current(url) is None


def test_db_upgrade_cli_uses_settings(data_dir: Path) -> None:
    from typer.testing import CliRunner

    from migrations.runner import head
    from optforge.cli import app

    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert head() in result.output
    assert APP_TABLES <= tables(f"sqlite:///{data_dir / 'optforge.db'}")
    result = CliRunner().invoke(app, ["db", "downgrade", "base"])
    assert result.exit_code == 0 and "None" in result.output
