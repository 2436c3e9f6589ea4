"""Login for the web pages when ``settings.auth_mode == "all"``.

A browser cannot send ``Authorization: Bearer``, so ``POST /login`` takes the API key from a
form, checks it with ``api.deps.verified_key``, stores a session (``web_sessions``) and sets an
HttpOnly, SameSite=Lax cookie ``<session id>.<random token>.<HMAC-SHA256>``. The HMAC key is
the server's secret (``settings.session_secret``, else generated once into
``data_dir/session_secret``), never anything in the database, and the database keeps only a
hash of the token: reading the database does not let anyone mint or replay a session. Every
page checks the stored session (expiry, ``revoked_at``) and its key (revoked: logged out);
logout revokes the session, so an old cookie replayed afterwards gets the login page. Pages
also accept the Bearer (or ``X-API-Key``) header, for scripts. Modes ``writes``/``off``: pages
are public.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from api.deps import app_settings, presented_key, request_sessionmaker, verified_key
from api.web.render import render
from core.config import Settings
from core.models import ApiKey, WebSession

COOKIE = "optforge_session"
SESSION_MAX_AGE_S = 7 * 24 * 3600
MAX_FORM_BYTES = 4096
_CONTEXT = "optforge-web-session-v2"

router = APIRouter(include_in_schema=False)


def session_secret(settings: Settings) -> bytes:
    """The cookie-signing secret: the setting, else the one generated into the data dir."""
    if settings.session_secret:
        return settings.session_secret.encode()
    return _secret_file(settings.data_dir / "session_secret")


@lru_cache(maxsize=8)
def _secret_file(path: Path) -> bytes:
    """Read ``path``, creating it (mode 0600, atomically: link of a full temp file) if absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)  # fails if another process created it first: use theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes().strip()


def _mac(secret: bytes, sid: int, token: str) -> str:
    return hmac.new(secret, f"{_CONTEXT}:{sid}:{token}".encode(), hashlib.sha256).hexdigest()


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite drops the zone


def create_session(
    session: Session, row: ApiKey, secret: bytes, now: datetime | None = None
) -> str:
    """Store a session for the verified key ``row``; the cookie value (the caller commits)."""
    token = secrets.token_urlsafe(24)
    stored = WebSession(
        key_id=row.id,
        token_hash=hashlib.sha256(token.encode()).hexdigest(),
        created_at=_now(now),
        expires_at=_now(now) + timedelta(seconds=SESSION_MAX_AGE_S),
    )
    session.add(stored)
    session.flush()
    return f"{stored.id}.{token}.{_mac(secret, stored.id, token)}"


def _stored(session: Session, cookie: str, secret: bytes) -> WebSession | None:
    """The stored session a correctly signed cookie names (no database read otherwise)."""
    parts = cookie.split(".")
    if not cookie.isascii() or len(cookie) > 200 or len(parts) != 3:
        return None
    sid, token, mac = parts
    if not (sid.isdigit() and len(sid) < 12 and token):
        return None
    if not hmac.compare_digest(mac, _mac(secret, int(sid), token)):
        return None
    stored = session.get(WebSession, int(sid))
    digest = hashlib.sha256(token.encode()).hexdigest()
    if stored is None or not hmac.compare_digest(stored.token_hash, digest):
        return None
    return stored


def session_owner(
    session: Session, cookie: str, secret: bytes, now: datetime | None = None
) -> str | None:
    """The key name of a valid, unexpired, unrevoked session of a non-revoked key, else None."""
    stored = _stored(session, cookie, secret)
    if stored is None or stored.revoked_at is not None:
        return None
    if not _aware(stored.created_at) <= _now(now) < _aware(stored.expires_at):
        return None
    row = session.get(ApiKey, stored.key_id)
    return row.name if row is not None and row.revoked_at is None else None


def revoke_session(session: Session, cookie: str, secret: bytes) -> bool:
    """End the session the cookie names (logout); False for a cookie that names none."""
    stored = _stored(session, cookie, secret)
    if stored is None:
        return False
    stored.revoked_at = stored.revoked_at or datetime.now(UTC)
    return True


def safe_next(target: str | None) -> str:
    """A local path to go back to after login; anything else (``//evil``, ``http:``) is ``/``."""
    target = target or "/"
    local = target.startswith("/") and not target.startswith(("//", "/\\"))
    if not local or any(ord(c) < 0x21 or c == "\\" for c in target) or len(target) > 2000:
        return "/"
    return target


def login_page(request: Request, next_url: str, error: str = "", code: int = 401) -> Response:
    ctx = {"next": safe_next(next_url), "error": error}
    resp = render(request, "login.html", ctx, status_code=code)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _page_owner(request: Request) -> str | None:
    """Who may see the page (``""`` when auth does not apply); None: show the login page.

    Raises:
        HTTPException: a Bearer/X-API-Key header was sent and is wrong (401) or revoked (403).
    """
    if app_settings(request).auth_mode != "all":
        return ""
    headers = request.headers
    key = presented_key(headers.get("authorization"), headers.get("x-api-key"))
    with request_sessionmaker(request)() as session:
        if key:
            return verified_key(session, key).name
        token = request.cookies.get(COOKIE)
        secret = session_secret(app_settings(request))
        return session_owner(session, token, secret) if token else None


async def page_guard(request: Request) -> Response | None:
    """None when the page may be served, else the login page (401/403)."""
    try:
        owner = await run_in_threadpool(_page_owner, request)
    except HTTPException as exc:
        return login_page(request, _here(request), str(exc.detail), exc.status_code)
    if owner is None:
        return login_page(request, _here(request))
    request.state.web_user = owner
    return None


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


class PageRoute(APIRoute):
    """A page route that answers with the login page first when the request is not allowed."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            denied = await page_guard(request)
            return denied if denied is not None else await handler(request)

        return guarded


def _redirect(target: str) -> RedirectResponse:
    return RedirectResponse(safe_next(target), status_code=status.HTTP_303_SEE_OTHER)


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    """The login form (mode ``all``); elsewhere pages are public, so straight back."""
    if app_settings(request).auth_mode != "all":
        return _redirect(next)
    return login_page(request, next, code=200)


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    fields: dict[str, Any] = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    return {k: v[0] for k, v in fields.items() if v}


def _key_token(request: Request, key: str) -> str:
    secret = session_secret(app_settings(request))
    with request_sessionmaker(request)() as session:
        token = create_session(session, verified_key(session, key), secret)
        session.commit()
        return token


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the posted ``key``; on success set the session cookie and go back to ``next``."""
    form = await _form(request)
    next_url = safe_next(form.get("next"))
    if app_settings(request).auth_mode != "all":
        return _redirect(next_url)
    key = form.get("key", "").strip()
    if not key:
        return login_page(request, next_url, "enter an API key")
    try:
        token = await run_in_threadpool(_key_token, request, key)
    except HTTPException as exc:
        return login_page(request, next_url, str(exc.detail), exc.status_code)
    resp = _redirect(next_url)
    resp.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return resp


@router.api_route("/logout", methods=["GET", "POST"])
def logout(request: Request) -> Response:
    """End the session (revoked in the database: the cookie is dead even if replayed) and
    show the login page (or the leaderboard when pages are public)."""
    settings = app_settings(request)
    cookie = request.cookies.get(COOKIE)
    if cookie:
        with request_sessionmaker(request)() as session:
            if revoke_session(session, cookie, session_secret(settings)):
                session.commit()
    target = "/login" if settings.auth_mode == "all" else "/"
    resp = _redirect(target)
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
    return resp
