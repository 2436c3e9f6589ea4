"""Wiring shared by the routes: settings, DB sessions and API-key auth.

Keys are ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``); only their sha256 is stored.
``settings.auth_mode``: ``writes`` (default) guards POSTs, ``all`` guards reads too, ``off`` none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings, get_settings
from core.models import ApiKey
from records.api_keys import hash_key


def app_settings(request: Request) -> Settings:
    """The settings the app was created with (a bare router falls back to the global ones)."""
    settings = getattr(request.app.state, "settings", None)
    return settings if isinstance(settings, Settings) else get_settings()


def request_sessionmaker(request: Request) -> sessionmaker[Session]:
    maker = getattr(request.app.state, "sessionmaker", None)
    if maker is None:
        from core.db import get_sessionmaker

        maker = get_sessionmaker(app_settings(request).database_url)
    return maker  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    """One session per request, closed (and rolled back if uncommitted) afterwards."""
    session = request_sessionmaker(request)()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(app_settings)]


def presented_key(authorization: str | None, x_api_key: str | None) -> str:
    if x_api_key:
        return x_api_key.strip()
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _check_key(session: Session, key: str) -> str:
    """The owner name of a valid key; 401 for a missing/unknown key, 403 for a revoked one."""
    return verified_key(session, key).name


def verified_key(session: Session, key: str) -> ApiKey:
    """The row of a valid key; 401 for a missing/unknown key, 403 for a revoked one."""
    if not key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "an API key is required: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).first()
    if row is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid API key", headers={"WWW-Authenticate": "Bearer"}
        )
    if row.revoked_at is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"API key {row.name!r} is revoked")
    return row


def require_write(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str | None:
    """Owner name of the caller's key, or None when auth is off."""
    if app_settings(request).auth_mode == "off":
        return None
    with request_sessionmaker(request)() as session:
        return _check_key(session, presented_key(authorization, x_api_key))


def require_read(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str | None:
    """Reads are public unless ``auth_mode == "all"``."""
    if app_settings(request).auth_mode != "all":
        return None
    with request_sessionmaker(request)() as session:
        return _check_key(session, presented_key(authorization, x_api_key))


WriterDep = Annotated[str | None, Depends(require_write)]
ReaderDep = Annotated[str | None, Depends(require_read)]


@dataclass(frozen=True)
class Caller:
    """Who sends a write: the key's name and admin flag (``name`` None: auth is off)."""

    name: str | None
    admin: bool = False

    def may_change(self, owner: str | None) -> bool:
        """Owners change their own records, admin keys anyone's; with auth off, everyone."""
        return self.name is None or self.admin or owner == self.name


def require_caller(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Caller:
    """The caller of a write that changes an existing record (cancel): name and admin flag."""
    if app_settings(request).auth_mode == "off":
        return Caller(None)
    with request_sessionmaker(request)() as session:
        row = verified_key(session, presented_key(authorization, x_api_key))
        return Caller(row.name, bool(row.is_admin))


def ensure_owner(caller: Caller, owner: str | None, what: str) -> None:
    """403 unless ``caller`` may change ``what`` (owned by ``owner``)."""
    if not caller.may_change(owner):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{what} belongs to another key; only its owner or an admin key may change it",
        )


CallerDep = Annotated[Caller, Depends(require_caller)]
