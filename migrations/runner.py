"""Apply our Alembic migrations programmatically (``optforge db upgrade``, ``optforge up``, tests).

The Alembic files live next to this module in the ``migrations`` package (ini included), so this
works from an installed copy as well as from a checkout. The version table's name is
``core.db.VERSION_TABLE``, shared with ``env.py`` (which Alembic runs) without a cycle.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from core.config import get_settings
from core.db import VERSION_TABLE, make_engine

__all__ = ["VERSION_TABLE", "alembic_config", "current", "downgrade", "head", "upgrade"]

HERE = Path(__file__).resolve().parent


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config for our migrations and ``url`` (default: settings.database_url)."""
    if url is None:
        settings = get_settings()
        settings.ensure_dirs()
        url = settings.database_url
    cfg = Config(str(HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(HERE))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head() -> str:
    """The newest revision of our migrations (what ``upgrade`` brings a database to)."""
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have one head, found {heads}")
    return str(heads[0])


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Migrate the database at ``url`` (default: settings) up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None, revision: str) -> None:
    """Migrate the database at ``url`` (None: settings) down to ``revision`` (e.g. "base")."""
    command.downgrade(alembic_config(url), revision)


def current(url: str | None = None) -> str | None:
    """The revision the database at ``url`` is at (None for an empty database)."""
    if url is None:
        url = get_settings().database_url
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if VERSION_TABLE not in inspect(conn).get_table_names():
                return None
            return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    finally:
        engine.dispose()
