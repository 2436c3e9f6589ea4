"""Fixtures for tests against real services: PostgreSQL, Redis (and Celery workers, uvicorn).

Without the servers these tests skip with the reason printed, unless
``OPTFORGE_REQUIRE_SERVICES=1`` (set by ``.ci/run``), in which case they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_ADMIN_URL = os.environ.get(
    "OPTFORGE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST = os.environ.get("OPTFORGE_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("OPTFORGE_TEST_REDIS_PORT", "6379"))
REQUIRE_SERVICES = os.environ.get("OPTFORGE_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip (locally) or fail (in CI) a test whose server is missing."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}", pytrace=False)
    pytest.skip(f"service unavailable: {reason}")


def _pg_admin_engine():  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def _check_postgres() -> str | None:
    try:
        from sqlalchemy import text

        with _pg_admin_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"PostgreSQL at {PG_ADMIN_URL}: {exc.__class__.__name__}: {exc}"[:300]
    return None


def _check_redis() -> str | None:
    try:
        import redis

        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis at {REDIS_HOST}:{REDIS_PORT}: {exc.__class__.__name__}: {exc}"[:300]
    return None


def make_pg_database(prefix: str = "optforge_test") -> str:
    """Create a throw-away Postgres database and return its SQLAlchemy URL."""
    from sqlalchemy import text

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _pg_admin_engine().connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    from sqlalchemy import text

    name = url.rsplit("/", 1)[1]
    with _pg_admin_engine().connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_available() -> None:
    reason = _check_postgres()
    if reason:
        unavailable(reason)


@pytest.fixture(scope="session")
def redis_available() -> None:
    reason = _check_redis()
    if reason:
        unavailable(reason)


@pytest.fixture(scope="session")
def pg_url(postgres_available: None) -> Iterator[str]:
    """A throw-away database of record for this test session."""
    url = make_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def pg_optuna_url(postgres_available: None) -> Iterator[str]:
    """Optuna's own throw-away database (never shares tables with ours)."""
    url = make_pg_database("optforge_optuna_test")
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def redis_url(redis_available: None) -> Iterator[str]:
    """A Redis database number private to this test session, flushed before and after."""
    import redis

    db = 1 + (os.getpid() % 14)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    client.flushdb()
