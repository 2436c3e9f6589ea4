"""Alembic migrations on an empty PostgreSQL database: head equals core.models, then base."""

from __future__ import annotations

from integration.conftest import drop_pg_database, make_pg_database
from integration.fixtures_service import APP_TABLES, schema_diff, table_names


def test_postgres_upgrade_matches_models_and_downgrades(postgres_available: None) -> None:
    from migrations.runner import VERSION_TABLE, current, downgrade, head, upgrade

    url = make_pg_database("optforge_migrate_test")
    try:
        assert current(url) is None
        upgrade(url)
        assert APP_TABLES | {VERSION_TABLE} <= table_names(url)
        assert current(url) == head()
        assert schema_diff(url) == []
        downgrade(url, "base")
        assert table_names(url) & APP_TABLES == set()
        upgrade(url)  # and back up again on the same database
        assert schema_diff(url) == []
    finally:
        drop_pg_database(url)
