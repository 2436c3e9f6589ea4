"""Error handling so no client input yields a 5xx: precise 422s, 404/409 for search errors,
and a body-size limit (413) enforced while the body streams in.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


def unprocessable(exc: Exception, prefix: tuple[Any, ...] = ("body",)) -> HTTPException:
    """A 422 for a search-layer ``ValueError``, keeping its field paths and valid values.

    ``RecipeError``-like exceptions carry ``errors`` (pydantic-style dicts) and ``valid``.
    """
    raw = getattr(exc, "errors", None)
    if not (isinstance(raw, list) and raw and all(isinstance(e, dict) for e in raw)):
        field = next(
            (getattr(exc, a) for a in ("field", "loc", "path") if getattr(exc, a, None)), ()
        )
        raw = [{"loc": field if isinstance(field, tuple | list) else (field,), "msg": str(exc)}]
    errors = []
    for err in raw:
        loc = tuple(err.get("loc") or ())
        one = _field_error({**err, "loc": (*prefix, *loc)})
        valid = getattr(exc, "valid", None)
        if valid and "valid" not in one:
            one["valid"] = jsonable_encoder(valid)
        errors.append(one)
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT, {"msg": str(exc), "errors": errors}
    )


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


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(HTTPException, _http_handler)
    app.add_exception_handler(StarletteHTTPException, _route_handler)
    app.add_exception_handler(IntegrityError, _integrity_handler)
    app.add_exception_handler(DataError, _data_handler)


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
