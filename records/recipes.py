"""Recipes for the service: resolve preset names / recipe dicts, validate, analytical memory.

The API and the experiment fan-out reach ``optim_core`` only through this module; optim_core
(and so torch) is imported lazily inside the functions.
"""

from __future__ import annotations

from typing import Any

from core.errors import Invalid, NotFound, describe

__all__ = [
    "RecipeError",
    "UnknownNameError",
    "preset_info",
    "preset_names",
    "recipe_model",
    "resolve_recipe",
    "state_bytes_on",
    "validate_recipe",
]


class RecipeError(Invalid):
    """A bad recipe or spec; ``errors`` are pydantic-style dicts (loc, msg, type)."""

    def __init__(self, errors: list[dict[str, Any]], valid: list[str] | None = None) -> None:
        first = errors[0] if errors else {"loc": ()}
        super().__init__(describe(errors), tuple(first.get("loc", ())), valid, errors=errors)

    @classmethod
    def at(cls, loc: tuple[Any, ...], msg: str, kind: str = "value_error") -> RecipeError:
        return cls([{"loc": loc, "msg": msg, "type": kind}])

    def prefixed(self, *prefix: Any) -> RecipeError:
        """The same error (same class, same ``valid``) with ``prefix`` before every path."""
        errors = [{**e, "loc": (*prefix, *e.get("loc", ()))} for e in self.errors]
        return type(self)(errors, self.valid)


class UnknownNameError(RecipeError):
    """An unknown preset or workload name in a spec; ``valid`` lists the known ones."""

    @classmethod
    def named(
        cls, loc: tuple[Any, ...], what: str, name: str, valid: list[str]
    ) -> UnknownNameError:
        msg = f"unknown {what} {name!r}; valid: {', '.join(valid)}"
        return cls([{"loc": loc, "msg": msg, "type": f"unknown_{what}"}], valid)


def preset_names() -> list[str]:
    """Names of optim_core's presets."""
    import optim_core

    return list(optim_core.presets.names())


def _model(data: Any) -> Any:
    """An ``optim_core.Recipe`` from a dict/JSON (RecipeError with field paths on failure)."""
    from pydantic import ValidationError

    import optim_core

    try:
        return optim_core.Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(Invalid.from_pydantic(exc.errors()).errors) from None
    except Exception as exc:  # noqa: BLE001 - user data must give a 422, never a 500
        raise RecipeError.at((), f"invalid recipe: {type(exc).__name__}: {exc}") from None


def recipe_model(data: Any) -> Any:
    """An ``optim_core.Recipe`` from a recipe dict (RecipeError with field paths on failure)."""
    return _model(data)


def _preset(name: str) -> Any:
    import optim_core

    valid = preset_names()
    if name not in valid:
        raise UnknownNameError.named(("preset",), "preset", name, valid)
    return optim_core.presets.get(name)


def resolve_recipe(ref: Any) -> tuple[str | None, dict[str, Any], str]:
    """``(name, canonical dict, hash)`` of a preset name, a recipe dict or a ``RecipeRef``.

    A ref may be a string (preset name), ``{"preset": name[, "name"]}`` or
    ``{"recipe": {...}[, "name"]}``, or a bare recipe dict; the name of a bare dict is its
    ``name`` field if any. Raises RecipeError / UnknownNameError with the field path.
    """
    name: str | None
    if hasattr(ref, "model_dump"):
        ref = ref.model_dump(exclude_none=True)
    if isinstance(ref, str):
        recipe, name = _preset(ref), ref
    elif isinstance(ref, dict) and "preset" in ref:
        recipe, name = _preset(str(ref["preset"])), ref.get("name") or ref["preset"]
    elif isinstance(ref, dict) and "recipe" in ref:
        try:
            recipe = _model(ref["recipe"])
        except RecipeError as exc:
            raise exc.prefixed("recipe") from None
        name = ref.get("name") or _name_of(recipe, ref["recipe"])
    elif isinstance(ref, dict):
        recipe = _model(ref)
        name = _name_of(recipe, ref)
    else:
        raise RecipeError.at((), "a recipe ref is a preset name or a recipe object")
    try:
        return name, recipe.canonical(), recipe.hash()
    except Exception as exc:  # noqa: BLE001 - a recipe that validates but cannot be hashed
        raise RecipeError.at((), f"invalid recipe: {type(exc).__name__}: {exc}") from None


def _name_of(recipe: Any, data: Any) -> str | None:
    name = getattr(recipe, "name", None)
    if name is None and isinstance(data, dict):
        name = data.get("name")
    return str(name) if name else None


def preset_info(name: str) -> dict[str, Any]:
    """:func:`validate_recipe` of preset ``name``; NotFound (listing the valid names) if none."""
    valid = preset_names()
    if name not in valid:
        raise NotFound(f"unknown preset {name!r}; valid: {', '.join(valid)}", valid)
    return validate_recipe(name)


def validate_recipe(data: Any, workload: str | None = None) -> dict[str, Any]:
    """Validate a recipe (dict, preset name or ref) and describe it.

    Returns ``{name, canonical, hash, description}`` plus, with a ``workload``, the analytical
    optimizer-state bytes for that workload's model: ``state_bytes, n_params,
    state_bytes_per_param, workload``. Raises RecipeError / UnknownNameError.
    """
    import optim_core

    name, canonical, digest = resolve_recipe(data)
    recipe = optim_core.Recipe.model_validate(canonical)
    out: dict[str, Any] = {"name": name, "canonical": canonical, "hash": digest}
    try:
        out["description"] = optim_core.describe(recipe)
    except Exception:  # noqa: BLE001 - a description is a nicety, never a failure
        out["description"] = None
    if workload is None:
        return out
    from core.workloads import get_workload

    try:
        spec = get_workload(workload)
    except NotFound as exc:
        raise UnknownNameError.named(("workload",), "workload", workload, exc.valid) from None
    state = state_bytes_on(recipe, spec)
    out.update(
        workload=spec.name,
        state_bytes=state,
        n_params=spec.n_params,
        state_bytes_per_param=state / max(spec.n_params, 1),
    )
    return out


def state_bytes_on(recipe: Any, spec: Any) -> int:
    """Analytical optimizer-state bytes of ``recipe`` (a Recipe or canonical dict) on the model
    of workload ``spec``; RecipeError when it does not fit (e.g. a rank above a matrix's)."""
    import optim_core
    from core.workloads import named_shapes

    try:
        model = optim_core.Recipe.model_validate(recipe)
        return int(optim_core.state_bytes(model, named_shapes(spec), model_facts=spec.model))
    except Exception as exc:  # noqa: BLE001 - e.g. a rank larger than a matrix of this model
        raise RecipeError.at(
            (), f"recipe does not fit workload {spec.name!r}: {type(exc).__name__}: {exc}"
        ) from None
