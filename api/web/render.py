"""Jinja2 environment of the web pages: template folder, number/byte filters, 404 page, and
the pages of one row by its path id (a malformed or unknown id is the 404 page)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Request
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.responses import Response

from optim_core.describe import describe
from optim_core.recipe import Recipe

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"

T = TypeVar("T")
TERMINAL = frozenset({"succeeded", "failed", "diverged", "cancelled", "pruned"})


def fmt_num(v: Any, digits: int = 4) -> str:
    """``0.123456`` -> ``"0.1235"``; None/NaN -> an em dash."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int) or abs(v) >= 10**digits:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def fmt_bytes(v: Any) -> str:
    """``123456`` -> ``"120.6 KiB"``."""
    if not isinstance(v, int | float) or isinstance(v, bool):
        return "—"
    size = float(v)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def fmt_time(v: Any) -> str:
    """A timestamp in UTC to the second, ``2026-12-01 20:05:12Z`` (SQLite gives naive UTC)."""
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return v
    if isinstance(v, datetime):
        utc = v.astimezone(UTC) if v.tzinfo else v
        return utc.strftime("%Y-%m-%d %H:%M:%SZ")
    return "—" if v is None else str(v)


def fmt_params(params: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Trial parameters as sorted (name, short value) pairs: 4 significant digits."""
    from api.web.analysis import fmt_value

    return [(k, fmt_value(v)) for k, v in sorted((params or {}).items())]


def to_yaml(v: Any) -> str:
    import yaml

    return str(yaml.safe_dump(v, sort_keys=False, default_flow_style=False, width=88))


def describe_recipe(canonical: dict[str, Any] | None) -> list[str]:
    """A stored recipe's design axes (or routes) in words, by ``optim_core.describe`` (torch-free);
    a stored form the schema no longer accepts is listed key by key."""
    if not canonical:
        return ["(no recipe stored)"]
    try:
        recipe = Recipe.model_validate(canonical)
    except ValidationError:
        return [f"{k}: {_short(v)}" for k, v in canonical.items()]
    return describe(recipe).splitlines()


def _short(v: Any, limit: int = 160) -> str:
    text = str(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def python_snippet(canonical: dict[str, Any]) -> str:
    """Copy-paste Python that builds the recipe with ``optim_core.build``."""
    return (
        "import optim_core\n\n"
        f"recipe = optim_core.Recipe.model_validate({py_literal(canonical)})\n"
        "optimizer = optim_core.build(recipe, model)  # model: your torch.nn.Module\n"
    )


def py_literal(v: Any, depth: int = 0) -> str:
    """A JSON value as an indented Python literal (scalar-only lists and dicts stay inline)."""
    pad, inner = "    " * depth, "    " * (depth + 1)
    if isinstance(v, dict) and v:
        if all(not isinstance(x, dict | list) for x in v.values()) and len(repr(v)) < 72:
            return repr(v)
        items = [f"{inner}{k!r}: {py_literal(x, depth + 1)}," for k, x in v.items()]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(v, list) and any(isinstance(x, dict | list) for x in v):
        items = [f"{inner}{py_literal(x, depth + 1)}," for x in v]
        return "[\n" + "\n".join(items) + f"\n{pad}]"
    return repr(v)


templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.filters.update(
    num=fmt_num,
    nbytes=fmt_bytes,
    time=fmt_time,
    params=fmt_params,
    yaml=to_yaml,
    pretty_json=lambda v: json.dumps(v, indent=2, sort_keys=False),
    short=lambda h: (h or "")[:10],
    describe=describe_recipe,
    snippet=python_snippet,
)
templates.env.globals["TERMINAL"] = TERMINAL


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def not_found(request: Request, message: str) -> Response:
    """The 404 page (also used for ids that are not even numbers)."""
    return render(request, "404.html", {"message": message}, status_code=404)


def parse_id(text: str | None) -> int | None:
    """A non-negative int from a path/query string, or None (a bad id is a 404, not a 422)."""
    text = (text or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None


def for_id(
    request: Request,
    noun: str,
    text: str,
    load: Callable[[int], T],
    show: Callable[[int, T], Response],
) -> Response:
    """``show(id, load(id))`` for the id in the path segment ``text``; the 404 page ("There is
    no <noun> '<text>'.") when ``text`` is not an id or ``load`` raises LookupError."""
    ident = parse_id(text)
    try:
        if ident is None:
            raise LookupError(text)
        found = load(ident)
    except LookupError:
        return not_found(request, f"There is no {noun} {text!r}.")
    return show(ident, found)


def page_for_id(
    request: Request, template: str, noun: str, text: str, load: Callable[[int], dict[str, Any]]
) -> Response:
    """The ``template`` page with the context ``load(id)``, or the 404 page (:func:`for_id`)."""
    return for_id(request, noun, text, load, lambda _id, ctx: render(request, template, ctx))
