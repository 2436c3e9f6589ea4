"""Login for the web pages when ``settings.auth_mode == "all"``.

A browser cannot send ``Authorization: Bearer``, so ``POST /login`` takes the API key from a
form, checks it with ``api.deps.verified_key`` and sets an HttpOnly, SameSite=Lax cookie. The
cookie never holds the key: it is ``<key id>.<issued unix time>.<HMAC-SHA256>`` keyed by the
key's stored hash, so it is checked against the ``api_keys`` row on every page (a revoked or
deleted key logs its sessions out) and expires after ``SESSION_MAX_AGE_S``. Pages also accept
the Bearer (or ``X-API-Key``) header, for scripts. Modes ``writes``/``off``: pages are public.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from api.deps import app_settings, presented_key, request_sessionmaker, verified_key
from api.web.render import render
from core.models import ApiKey

COOKIE = "optforge_session"
SESSION_MAX_AGE_S = 7 * 24 * 3600
MAX_FORM_BYTES = 4096
_CONTEXT = "optforge-web-session-v1"

router = APIRouter(include_in_schema=False)


def _mac(key_hash: str, key_id: int, issued: int) -> str:
    msg = f"{_CONTEXT}:{key_id}:{issued}".encode()
    return hmac.new(key_hash.encode(), msg, hashlib.sha256).hexdigest()


def session_token(row: ApiKey, now: float | None = None) -> str:
    """The cookie value for a verified key row (no secret of the key itself in it)."""
    issued = int(time.time() if now is None else now)
    return f"{row.id}.{issued}.{_mac(row.key_hash, row.id, issued)}"


def token_owner(session: Session, token: str, now: float | None = None) -> str | None:
    """The key name behind a valid, unexpired session token of a non-revoked key, else None."""
    parts = token.split(".")
    if not token.isascii() or len(token) > 200 or len(parts) != 3:
        return None
    if not (parts[0].isdigit() and parts[1].isdigit() and len(parts[0]) < 12):
        return None
    key_id, issued = int(parts[0]), int(parts[1])
    age = (time.time() if now is None else now) - issued
    if not 0 <= age <= SESSION_MAX_AGE_S:
        return None
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return None
    return row.name if hmac.compare_digest(parts[2], _mac(row.key_hash, key_id, issued)) else None


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
        return token_owner(session, token) if token else None


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
    with request_sessionmaker(request)() as session:
        return session_token(verified_key(session, key))


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
    """Forget the session cookie and show the login page (or the leaderboard when public)."""
    target = "/login" if app_settings(request).auth_mode == "all" else "/"
    resp = _redirect(target)
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
    return resp
