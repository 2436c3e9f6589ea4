"""Web pages under OPTFORGE_AUTH_MODE=all: login form, session cookie, logout, Bearer header."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from web_seed import create_schema

ClientFor = Callable[[str], TestClient]


@pytest.fixture
def client_for(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClientFor]:
    """A TestClient of an app created under ``OPTFORGE_AUTH_MODE=<mode>``."""
    from api.main import create_app
    from core.config import get_settings
    from core.db import get_engine

    clients: list[TestClient] = []

    def make(mode: str) -> TestClient:
        monkeypatch.setenv("OPTFORGE_AUTH_MODE", mode)
        get_settings.cache_clear()
        settings = get_settings()
        assert settings.auth_mode == mode
        settings.ensure_dirs()
        create_schema(get_engine(settings.database_url))
        clients.append(TestClient(create_app()).__enter__())
        return clients[-1]

    yield make
    for c in clients:
        c.__exit__(None, None, None)
    get_settings.cache_clear()


@pytest.fixture
def client(client_for: ClientFor) -> TestClient:
    return client_for("all")


def _new_key(name: str = "alice") -> str:
    from core.db import session_scope
    from records.api_keys import create_api_key

    with session_scope() as session:
        return create_api_key(session, name)


def _login(client: TestClient, key: str, next_url: str = "/studies") -> str:
    r = client.post(
        "/login", data={"key": key, "next": next_url}, follow_redirects=False
    )  # fmt: skip
    assert r.status_code == 303, r.text
    return r.headers["location"]


def _is_login_page(html: str) -> bool:
    return 'id="login-form"' in html and 'name="key"' in html and 'action="/login"' in html


@pytest.mark.parametrize("path", ["/", "/studies", "/compare?runs=1,2", "/runs/1", "/recipes/ab"])
def test_pages_without_a_key_get_the_login_page(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 401 and "text/html" in r.headers["content-type"]
    assert _is_login_page(r.text) and "No runs yet" not in r.text
    m = re.search(r'name="next" value="([^"]*)"', r.text)
    assert m and unescape(m.group(1)) == path  # back to the page asked for after login
    assert r.headers["cache-control"] == "no-store"


def test_next_is_escaped_in_the_form(client: TestClient) -> None:
    r = client.get('/studies?x="><script>alert(1)</script>')
    assert r.status_code == 401 and "<script>alert(1)" not in r.text
    assert "&lt;script&gt;" in r.text or "%3Cscript%3E" in r.text


def test_wrong_or_empty_key_shows_the_form_again_with_an_error(client: TestClient) -> None:
    _new_key()
    r = client.post("/login", data={"key": "ofk_wrong", "next": "/studies"})
    assert r.status_code == 401 and _is_login_page(r.text)
    assert 'id="login-error"' in r.text and "invalid API key" in r.text
    empty = client.post("/login", data={"key": "  "})
    assert empty.status_code == 401 and "enter an API key" in empty.text
    assert "optforge_session" not in client.cookies
    assert client.get("/studies").status_code == 401


def test_right_key_sets_a_cookie_and_pages_open(client: TestClient) -> None:
    key = _new_key()
    r = client.post(
        "/login", data={"key": key, "next": "/studies?page=1"}, follow_redirects=False
    )  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == "/studies?page=1"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("optforge_session=") and "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower() and "Max-Age=" in cookie
    assert key not in cookie and key[4:] not in cookie  # the key itself never leaves
    for path in ("/", "/studies", "/compare"):
        page = client.get(path)
        assert page.status_code == 200 and not _is_login_page(page.text), path
        assert 'id="logout"' in page.text and "alice" in page.text
    assert client.get("/runs/999").status_code == 404  # logged in: the usual 404 page


def test_logout_clears_the_cookie(client: TestClient) -> None:
    _login(client, _new_key())
    assert client.get("/studies").status_code == 200
    r = client.get("/logout", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert (
        "optforge_session=" in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    )
    assert "optforge_session" not in client.cookies
    assert client.get("/studies").status_code == 401
    assert client.get("/login").status_code == 200 and _is_login_page(client.get("/login").text)


def test_logout_revokes_the_session_so_a_replayed_cookie_fails(client: TestClient) -> None:
    _login(client, _new_key())
    cookie = client.cookies["optforge_session"]
    assert client.post("/logout", follow_redirects=False).status_code == 303
    client.cookies.set("optforge_session", cookie)  # an attacker kept a copy
    r = client.get("/studies")
    assert r.status_code == 401 and _is_login_page(r.text)


def test_revoked_key_ends_its_sessions_and_forged_tokens_fail(client: TestClient) -> None:
    from core.db import session_scope
    from core.models import ApiKey, WebSession

    _login(client, _new_key())
    good = client.cookies["optforge_session"]
    sid, token, mac = good.split(".")
    forgeries = (f"{int(sid) + 1}.{token}.{mac}", f"{sid}.{token}x.{mac}",
                 f"{sid}.{token}.{'0' * 64}", "x", "9" * 30 + ".1.a")  # fmt: skip
    for forged in forgeries:
        client.cookies.clear()
        client.cookies.set("optforge_session", forged)
        assert client.get("/studies").status_code == 401, forged
    client.cookies.clear()
    client.cookies.set("optforge_session", good)
    assert client.get("/studies").status_code == 200
    with session_scope() as session:
        stored = session.get(WebSession, int(sid))
        assert stored is not None and token not in stored.token_hash  # only a hash is stored
        row = session.get(ApiKey, stored.key_id)
        assert row is not None and row.key_hash not in good
        row.revoked_at = datetime.now(UTC)
    assert client.get("/studies").status_code == 401


def test_sessions_expire_and_need_the_server_secret(data_dir: Path) -> None:
    from sqlalchemy.orm import Session

    from api.web.auth import SESSION_MAX_AGE_S, create_session, session_owner, session_secret
    from core.config import get_settings
    from core.db import get_engine
    from core.models import ApiKey

    create_schema(get_engine())
    secret = session_secret(get_settings())
    secret_file = data_dir / "session_secret"
    assert secret_file.read_bytes().strip() == secret and len(secret) >= 32
    assert secret_file.stat().st_mode & 0o077 == 0  # readable by the server user only
    assert session_secret(get_settings()) == secret  # generated once, then reused
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with Session(get_engine()) as session:
        row = ApiKey(name="bob", prefix="ofk_x", key_hash="ab" * 32)
        session.add(row)
        session.flush()
        cookie = create_session(session, row, secret, now=start)
        session.commit()
        assert session_owner(session, cookie, secret, now=start + timedelta(hours=1)) == "bob"
        late = start + timedelta(seconds=SESSION_MAX_AGE_S + 1)
        assert session_owner(session, cookie, secret, now=late) is None
        assert session_owner(session, cookie, secret, now=start - timedelta(seconds=5)) is None
        assert session_owner(session, cookie, b"another-secret", now=start) is None
        for odd in (f"²{cookie}", f"{cookie[:-1]}é", "7.1e3.ab", "7..", ""):
            assert session_owner(session, odd, secret, now=start) is None


def test_session_secret_setting_wins(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from api.web.auth import session_secret
    from core.config import Settings

    assert session_secret(Settings(session_secret="s3cret-from-env")) == b"s3cret-from-env"
    assert not (data_dir / "session_secret").exists()


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_api_docs_need_a_key_in_mode_all(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 401 and _is_login_page(r.text), path
    key = _new_key()
    assert client.get(path, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    _login(client, key)
    page = client.get(path)
    assert page.status_code == 200 and not _is_login_page(page.text)


@pytest.mark.parametrize("mode", ["writes", "off"])
def test_api_docs_public_in_other_modes(client_for: ClientFor, mode: str) -> None:
    client = client_for(mode)
    assert client.get("/openapi.json").json()["info"]["title"] == "optforge"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert "http" not in docs.text  # vendored Swagger UI, no CDN: works offline
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static/vendor/swagger-ui/{asset}" in docs.text
        assert client.get(f"/static/vendor/swagger-ui/{asset}").status_code == 200
    redoc = client.get("/redoc")  # ReDoc is not vendored: the same offline page
    assert redoc.status_code == 200 and str(redoc.url).endswith("/docs")


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example", "/\\evil.example", "studies", ""]
)
def test_login_never_redirects_off_site(client: TestClient, target: str) -> None:
    assert _login(client, _new_key(), next_url=target) == "/"


def test_bearer_header_opens_pages_for_scripts(client: TestClient) -> None:
    key = _new_key()
    assert client.get("/studies", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/studies", headers={"X-API-Key": key}).status_code == 200
    bad = client.get("/studies", headers={"Authorization": "Bearer ofk_nope"})
    assert bad.status_code == 401 and _is_login_page(bad.text) and "invalid API key" in bad.text


def test_static_files_stay_public(client: TestClient) -> None:
    r = client.get("/static/optforge.css")
    assert r.status_code == 200 and ".login" in r.text


def test_json_api_in_mode_all_is_unchanged(client: TestClient) -> None:
    key = _new_key()
    denied = client.get("/v1/presets")
    assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
    assert "API key is required" in denied.json()["detail"]
    _login(client, key)  # the page cookie does not open the JSON API (no CSRF surface there)
    assert client.get("/v1/presets").status_code == 401
    ok = client.get("/v1/presets", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200 and isinstance(ok.json(), list) and ok.json()
    assert client.get("/v1/health").status_code == 200


@pytest.mark.parametrize("mode", ["writes", "off"])
def test_other_modes_keep_pages_public(client_for: ClientFor, mode: str) -> None:
    client = client_for(mode)
    home = client.get("/")
    assert home.status_code == 200 and "No runs yet" in home.text and not _is_login_page(home.text)
    assert 'id="logout"' not in home.text
    assert client.get("/studies").status_code == 200
    r = client.get("/login?next=/studies", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/studies"
