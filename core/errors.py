"""Domain errors: what records, search and core raise on purpose, with one base class.

Each kind has one meaning, so the API maps it to one status in ONE handler (api/errors.py):
``NotFound`` -> 404, ``Conflict`` -> 409, ``Invalid`` -> 422 (with field paths). The web pages
and the CLI catch them by kind too. ``NotFound`` is a ``LookupError`` and ``Invalid`` /
``Conflict`` are ``ValueError``s, so code that caught the builtin kinds keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Conflict", "DomainError", "Invalid", "NotFound"]


class DomainError(Exception):
    """Base of the errors the service raises on purpose (never a bug, never the server)."""


class NotFound(DomainError, LookupError):
    """No such id or name; ``valid`` lists the known names where the set is closed."""

    def __init__(self, msg: str, valid: Iterable[Any] | None = None) -> None:
        super().__init__(msg)
        self.valid = list(valid or [])


class Conflict(DomainError, ValueError):
    """The record's state, or an earlier request, forbids the operation."""


class Invalid(DomainError, ValueError):
    """Refused input. ``field`` is its path in the submitted spec (e.g. ``("recipes", 1,
    "preset")``), ``valid`` the allowed values of a closed set; ``errors`` one pydantic-style
    dict (``loc``, ``msg``, ``type``) per problem, the first at ``field``."""

    def __init__(
        self,
        msg: str,
        field: Sequence[Any] | str = (),
        valid: Iterable[Any] | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(msg)
        self.field: tuple[Any, ...] = (field,) if isinstance(field, str) else tuple(field)
        self.valid = list(valid or [])
        self.errors = errors or [{"loc": self.field, "msg": msg, "type": "value_error"}]

    @classmethod
    def from_pydantic(cls, errors: Iterable[Any]) -> Invalid:
        """From pydantic's ``ValidationError.errors()`` (each with loc, msg, type)."""
        plain = [{"loc": tuple(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        return cls(describe(plain), plain[0]["loc"] if plain else (), errors=plain)


def describe(errors: list[dict[str, Any]]) -> str:
    """``"a.b: message"`` of the first error (``"invalid"`` for none)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first['msg']}" if where else str(first["msg"])
