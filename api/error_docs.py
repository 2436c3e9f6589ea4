"""The error responses the OpenAPI document declares: one envelope for every 4xx/5xx.

``api.errors`` produces these bodies; ``api.main`` attaches :func:`responses` to each router
of ``/v1`` so that clients (and schemathesis) see every status code an operation can answer.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FieldError(BaseModel):
    """One invalid field: its path (``body.recipes.1.preset``), the message and error type."""

    model_config = ConfigDict(extra="allow")  # le/ge/lt/gt/max_length/min_length when known
    field: str
    msg: str
    type: str
    valid: list[Any] | None = Field(None, description="the allowed values, for a closed set")


class ErrorBody(BaseModel):
    """Every error: ``detail`` in words; ``errors`` per field for validation errors."""

    detail: str
    errors: list[FieldError] | None = None


_WHEN = {
    401: "no API key, or an unknown one (WWW-Authenticate: Bearer)",
    403: "the key is revoked, or the record belongs to another key (owner or admin only)",
    404: "no such id or name (the detail lists valid names where there is a closed set)",
    409: "conflict: Idempotency-Key reused with another body, or the record's state forbids it",
    413: "request body larger than OPTFORGE_MAX_BODY_BYTES",
    422: "invalid body or query: each field with its path, message and valid values",
    503: "the database is unavailable; retry after Retry-After seconds",
}
_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    503: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}},
}

READ_CODES = (401, 403, 404, 422, 503)
WRITE_CODES = (401, 403, 404, 409, 413, 422, 503)


def responses(codes: tuple[int, ...]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for FastAPI: each code with the error envelope and its headers."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ErrorBody, "description": _WHEN[code]}
        if code in _HEADERS:
            out[code]["headers"] = _HEADERS[code]
    return out
