"""Torch-style param groups for :func:`optim_core.build`.

``build(recipe, [{"params": [...], "lr": 1e-3}, {"params": [...], "weight_decay": 0.0}])``: the
recipe routes every parameter as usual (one pipeline per route); a group's ``lr`` and
``weight_decay`` then override the route's for that group's parameters (each route group is
split by user group, the user's ``lr`` becoming the group's absolute ``lr`` and
``initial_lr``, so torch lr schedulers scale it). Other keys (``betas``, ``momentum``...) are
refused: the recipe's stages define them. Parameters may be tensors or ``(name, tensor)``
pairs (names drive routing: ``embed*``, ``lm_head*``; bare tensors are ``param_<i>``).

``add_param_group`` after construction is refused (:func:`refuse_late_group`): new
parameters would have no compiled pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor

GROUP_KEYS = frozenset({"params", "lr", "weight_decay", "name"})
OVERRIDES = ("lr", "weight_decay")


def is_param_groups(x: Any) -> bool:
    """A list/tuple of dicts (torch's param-group form), not a module / dict / tensor list."""
    return isinstance(x, list | tuple) and bool(x) and all(isinstance(g, dict) for g in x)


def _override(k: int, group: dict[str, Any], key: str) -> float:
    value = group[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"build: param group {k}: {key} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"build: param group {k}: {key} must be >= 0, got {value}")
    return float(value)


def _members(k: int, group: dict[str, Any], start: int) -> list[tuple[str, Tensor]]:
    if "params" not in group:
        raise ValueError(f"build: param group {k} has no 'params'")
    params = group["params"]
    items = [params] if isinstance(params, Tensor) else list(params)
    out = []
    for i, x in enumerate(items):
        name, p = x if isinstance(x, tuple) else (f"param_{start + i}", x)
        if not isinstance(p, Tensor):
            raise TypeError(f"build: param group {k}: expected tensors, got {type(p).__name__}")
        out.append((str(name), p))
    return out


def split_param_groups(
    groups: list[dict[str, Any]] | tuple[dict[str, Any], ...],
) -> tuple[list[tuple[str, Tensor]], list[dict[str, Any]]]:
    """(all named params in order, per group ``{"params": [...], "lr"?, "weight_decay"?}``)."""
    named: list[tuple[str, Tensor]] = []
    overrides: list[dict[str, Any]] = []
    for k, group in enumerate(groups):
        extra = sorted(set(group) - GROUP_KEYS)
        if extra:
            raise ValueError(
                f"build: param group {k}: unsupported key(s) {extra}; a group may set only "
                "'lr' and 'weight_decay' (the recipe's stages define the rest)"
            )
        members = _members(k, group, len(named))
        named += members
        ov = {key: _override(k, group, key) for key in OVERRIDES if key in group}
        overrides.append({"params": [p for _, p in members], **ov})
    seen: set[int] = set()
    for _, p in named:
        if id(p) in seen:
            raise ValueError("build: some parameters appear in more than one param group")
        seen.add(id(p))
    return named, overrides


def apply_overrides(opt: Any, overrides: list[dict[str, Any]]) -> None:
    """Split each route group of ``opt`` by user group and apply the user's lr / decay."""
    owner = {id(p): k for k, g in enumerate(overrides) for p in g["params"]}
    groups = []
    for group in opt.param_groups:
        parts: dict[int, list[Tensor]] = {}
        for p in group["params"]:
            parts.setdefault(owner[id(p)], []).append(p)
        for k, params in sorted(parts.items()):
            new = {**group, "params": params, "param_group": k}
            ov = overrides[k]
            if "lr" in ov:
                new.update(lr=ov["lr"], initial_lr=ov["lr"], lr_mult=None)
            if "weight_decay" in ov:
                new["weight_decay"] = ov["weight_decay"]
            groups.append(new)
    opt.param_groups[:] = groups


def build_grouped(make: Callable[[Any], Any], model_or_params: Any) -> Any:
    """``make(params)``, first flattening torch-style param groups and then applying them."""
    if not is_param_groups(model_or_params):
        return make(model_or_params)
    named, overrides = split_param_groups(model_or_params)
    opt = make(named)
    apply_overrides(opt, overrides)
    return opt


def refuse_late_group(opt: Any, group: dict[str, Any]) -> None:
    """``add_param_group`` is for the constructor only: later groups have no pipeline."""
    params = group.get("params")
    items = [params] if isinstance(params, Tensor) else list(params or [])
    known = getattr(opt, "_stages", None)
    if known is not None and any(p not in known for p in items if isinstance(p, Tensor)):
        raise ValueError(
            "add_param_group: parameters added after build() have no recipe pipeline; pass "
            "every group to optim_core.build(recipe, [{'params': ...}, {'params': ..., "
            "'lr': ...}]) instead"
        )
