"""Database engine and sessions for our database of record (Postgres or SQLite)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.config import get_settings

log = logging.getLogger(__name__)


#: Alembic's version table of our migrations (migrations/runner.py and migrations/env.py).
VERSION_TABLE = "optforge_alembic_version"


def make_engine(url: str) -> Engine:
    """An engine with the pragmas each backend needs for concurrent workers."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # connect_timeout: a server that does not answer fails the try instead of hanging it.
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=connect_args
    )


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the API read while a worker writes; busy_timeout waits instead of failing.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


@lru_cache(maxsize=4)
def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: settings.database_url)."""
    settings = get_settings()
    if url is None:
        settings.ensure_dirs()
    return make_engine(url or settings.database_url)


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# ------------------------------------------------------------------------------------------
# transient errors: a restarting server, a dropped connection, a serialization failure
# ------------------------------------------------------------------------------------------

# SQLSTATEs of errors that go away by themselves: serialization failure, deadlock, admin or
# crash shutdown, cannot connect now, connection failures, too many connections.
TRANSIENT_SQLSTATES = frozenset(
    {"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08001", "08003", "08004", "08006"}
    | {"53300"}
)


def aware(ts: datetime | None) -> datetime | None:
    """``ts`` as an aware UTC datetime (SQLite returns naive ones)."""
    if ts is None:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def rowcount(result: Any) -> int:
    """Rows matched by an UPDATE or DELETE (a CursorResult; 0 when the driver does not say)."""
    return int(getattr(result, "rowcount", 0) or 0)


def is_transient(exc: BaseException) -> bool:
    """True for a database error that a retry may cure (the server, not the statement)."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.TimeoutError):  # pool checkout timed out
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, sa_exc.InterfaceError):
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is not None:
        return str(sqlstate) in TRANSIENT_SQLSTATES or str(sqlstate).startswith("08")
    # No SQLSTATE: psycopg's connection failures and SQLite's "database is locked".
    return isinstance(exc, sa_exc.OperationalError)


T = TypeVar("T")


def with_retry(
    fn: Callable[[], T],
    what: str,
    budget_s: float | None = None,
    first_delay_s: float = 0.1,
    max_delay_s: float = 2.0,
) -> T:
    """Call ``fn`` (one whole transaction) until it succeeds, retrying transient errors.

    Backoff doubles from ``first_delay_s`` to ``max_delay_s`` (with jitter) for at most
    ``budget_s`` seconds (default ``settings.db_retry_s``); then the last error is raised.
    Errors that are not transient (a bad statement, a constraint) are raised at once.
    """
    budget = get_settings().db_retry_s if budget_s is None else budget_s
    deadline = time.monotonic() + budget
    delay = first_delay_s
    tries = 0
    while True:
        tries += 1
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: transient database error (try %d), retrying: %s", what, tries, exc)
        time.sleep(delay * random.uniform(0.8, 1.2))
        delay = min(delay * 2, max_delay_s)
