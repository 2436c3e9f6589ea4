"""Error handling so no client input yields a 5xx: precise 422s, one mapping of the domain
errors (``core.errors``: NotFound 404, Conflict 409, Invalid 422), and a body-size limit (413)
enforced while the body streams in.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import Conflict, DomainError, Invalid, NotFound

log = logging.getLogger("optforge.api")


def _loc_str(loc: Any) -> str:
    if isinstance(loc, list | tuple):
        return ".".join(str(p) for p in loc)
    return str(loc)


def _field_error(err: dict[str, Any]) -> dict[str, Any]:
    """One pydantic error as {field, msg, type[, valid]}; ``valid`` lists allowed values."""
    out: dict[str, Any] = {
        "field": _loc_str(err.get("loc", ())),
        "msg": str(err.get("msg", "invalid value")),
        "type": str(err.get("type", "value_error")),
    }
    ctx = err.get("ctx") or {}
    if "expected" in ctx:  # pydantic writes "'cpu' or 'gpu'"; clients get a list
        parts = re.split(r",\s*|\s+or\s+", str(ctx["expected"]))
        out["valid"] = [p.strip().strip("'\"") for p in parts if p.strip()]
    for key in ("le", "ge", "lt", "gt", "max_length", "min_length"):
        if key in ctx:
            out[key] = jsonable_encoder(ctx[key])
    return out


def error_body(detail: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return body


def field_errors(exc: Invalid, prefix: tuple[Any, ...]) -> list[dict[str, Any]]:
    """The error envelope's ``errors`` for an Invalid: each path under ``prefix``, with the
    valid values of a closed set."""
    out = []
    for err in exc.errors:
        one = _field_error({**err, "loc": (*prefix, *tuple(err.get("loc") or ()))})
        if exc.valid and "valid" not in one:
            one["valid"] = jsonable_encoder(exc.valid)
        out.append(one)
    return out


_DOMAIN_STATUS = (
    (NotFound, status.HTTP_404_NOT_FOUND),
    (Conflict, status.HTTP_409_CONFLICT),
    (Invalid, status.HTTP_422_UNPROCESSABLE_CONTENT),
)


async def _domain_handler(req: Request, exc: Exception) -> JSONResponse:
    """The one place a domain error becomes HTTP. An Invalid's paths start with ``query`` for
    a GET (its input is the query string) and ``body`` otherwise."""
    assert isinstance(exc, DomainError)
    code = next((c for kind, c in _DOMAIN_STATUS if isinstance(exc, kind)), 400)
    errors = None
    if isinstance(exc, Invalid):
        errors = field_errors(exc, ("query",) if req.method == "GET" else ("body",))
    return JSONResponse(error_body(str(exc), errors), status_code=code)


async def _validation_handler(_req: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_field_error(e) for e in exc.errors()]
    words = "; ".join(f"{e['field']}: {e['msg']}" for e in errors[:10])
    return JSONResponse(
        error_body(f"invalid request: {words}", errors),
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def _http_handler(_req: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if isinstance(detail, dict) and "msg" in detail:
        body = error_body(str(detail["msg"]), detail.get("errors"))
    else:
        body = error_body(detail if isinstance(detail, str) else str(detail))
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _route_handler(req: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown path, wrong method): the web 404 page for a browser
    asking for a page, the JSON error body everywhere else (``/v1``, API clients)."""
    assert isinstance(exc, StarletteHTTPException)
    wants_page = "text/html" in req.headers.get("accept", "")
    if exc.status_code == 404 and wants_page and not req.url.path.startswith("/v1"):
        from api.web.render import not_found

        return not_found(req, f"there is no page at {req.url.path}")
    return JSONResponse(
        error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


async def _integrity_handler(_req: Request, exc: Exception) -> JSONResponse:
    log.info("integrity error from client input: %s", exc)
    return JSONResponse(
        error_body("conflict with an existing record"), status_code=status.HTTP_409_CONFLICT
    )


async def _data_handler(_req: Request, exc: Exception) -> JSONResponse:
    # e.g. a NUL byte or an out-of-range integer the database refuses: the input's fault.
    log.info("database refused a client value: %s", exc)
    return JSONResponse(
        error_body("a value is not storable (out of range or invalid characters)"),
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def unavailable_response(retry_after_s: int, what: str = "the database") -> JSONResponse:
    """503 with Retry-After: the service, not the request, is at fault; try again soon."""
    return JSONResponse(
        error_body(f"{what} is unavailable; retry in {retry_after_s} s"),
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(retry_after_s)},
    )


async def _unavailable_handler(req: Request, exc: Exception) -> JSONResponse:
    # A restarting server, a dropped connection, a full pool: never a 500 for the client.
    log.warning("database unavailable for %s %s: %s", req.method, req.url.path, exc)
    settings = getattr(req.app.state, "settings", None)
    return unavailable_response(int(getattr(settings, "retry_after_s", 5)))


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(DomainError, _domain_handler)
    app.add_exception_handler(HTTPException, _http_handler)
    app.add_exception_handler(StarletteHTTPException, _route_handler)
    app.add_exception_handler(IntegrityError, _integrity_handler)
    app.add_exception_handler(DataError, _data_handler)
    for exc_type in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(exc_type, _unavailable_handler)


class BodySizeLimit:
    """Reject request bodies over ``max_bytes`` with 413, by header or while streaming.

    A body without Content-Length (chunked) is buffered up to the limit, then replayed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                await self._reject(send)
                return
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        total = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                await self._reject(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        resp = JSONResponse(
            error_body(f"request body larger than {self.max_bytes} bytes"),
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        )
        await resp({"type": "http"}, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}


# ------------------------------------------------------------------------------------------
# JSON bodies: strict parsing before FastAPI sees them
# ------------------------------------------------------------------------------------------

MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 100  # far above any id or count; Python refuses > 4300 digits anyway


class JsonBodyError(ValueError):
    """A JSON body refused before validation; ``field`` is its path (``body.recipes.0``)."""

    def __init__(self, msg: str, field: str = "body") -> None:
        super().__init__(msg)
        self.field = field


def _no_constant(name: str) -> Any:
    raise JsonBodyError(f"{name} is not a number JSON allows (finite numbers only)")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JsonBodyError(f"number {text[:40]} is out of range (finite numbers only)")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonBodyError(f"integer with {len(text)} digits is out of range")
    return int(text)


def check_json_body(raw: bytes) -> None:
    """Raise JsonBodyError for a body FastAPI would take but we refuse: invalid UTF-8,
    malformed JSON, NaN/Infinity/overflowing numbers, huge integers, nesting deeper than
    ``MAX_JSON_DEPTH``, NUL characters in any string (keys too)."""
    import json

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonBodyError(f"body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        doc = json.loads(
            text, parse_constant=_no_constant, parse_float=_finite, parse_int=_bounded_int
        )
    except RecursionError as exc:
        raise JsonBodyError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from exc
    except json.JSONDecodeError as exc:
        raise JsonBodyError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} col {exc.colno}"
        ) from exc
    _walk(doc)


def _walk(doc: Any) -> None:
    """Depth and NUL checks without recursion (the path names the offending field)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(doc, ("body",))]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise JsonBodyError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, str) and "\x00" in node:
            raise JsonBodyError("text must not contain NUL characters", _loc_str(path))
        if isinstance(node, dict):
            for key, value in node.items():
                if "\x00" in key:
                    raise JsonBodyError("keys must not contain NUL characters", _loc_str(path))
                stack.append((value, (*path, key)))
        elif isinstance(node, list):
            stack.extend((value, (*path, i)) for i, value in enumerate(node))


def _is_json(headers: dict[bytes, bytes]) -> bool:
    ctype = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    return not ctype or ctype.endswith(b"json")


class JsonGuard:
    """Answer 422 (the error envelope) for a JSON body :func:`check_json_body` refuses.

    Install it inside :class:`BodySizeLimit`, which bounds what this buffers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        if not _is_json(dict(scope.get("headers") or [])):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = bytearray()
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if body:
            try:
                check_json_body(bytes(body))
            except JsonBodyError as exc:
                await _json_error(exc, send)
                return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _json_error(exc: JsonBodyError, send: Send) -> None:
    err = {"field": exc.field, "msg": str(exc), "type": "json_invalid"}
    resp = JSONResponse(
        error_body(f"invalid request: {exc.field}: {exc}", [err]),
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )
    await resp({"type": "http"}, _empty_receive, send)
