"""Design space -> Optuna parameters (define-by-run) -> recipe, and back.

:func:`suggest_params` samples a :class:`~search.space.DesignSpace` on an Optuna trial; conditional
parameters are suggested only when their parent is active (``beta``/``momentum_position``/
``nesterov`` when momentum is on; ``basis``/``refresh``/``complement`` when a rank is chosen;
``state_bits`` when the design keeps state, by optim_core's rule ``Design.has_state``).
:func:`params_to_design` maps a flat params dict back to the recipe (design form, schema 1),
:func:`params_to_recipe` validates it with ``optim_core.Recipe``.

No optuna import: ``suggest_params`` takes any object with Optuna's ``suggest_categorical /
suggest_float / suggest_int`` methods (duck typing).

References: Optuna define-by-run API (Akiba et al., KDD 2019).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Protocol

from search.space import (
    NONE_KEY,
    DesignSpace,
    FloatRange,
    IntRange,
    NormsAxis,
    RankAxis,
    seq_key,
)


class SuggestTrial(Protocol):
    """The part of ``optuna.trial.Trial`` that :func:`suggest_params` uses."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...


def _rank_key(value: int | float | None) -> str:
    return NONE_KEY if value is None else repr(value)


def _pick(trial: Any, name: str, axis: Any) -> Any:
    """Suggest one axis value; single choices are fixed (no Optuna parameter)."""
    if isinstance(axis, FloatRange):
        return trial.suggest_float(name, axis.low, axis.high, log=axis.log)
    if isinstance(axis, IntRange):
        return trial.suggest_int(name, axis.low, axis.high, step=axis.step, log=axis.log)
    if len(axis) == 1:
        return axis[0]
    return trial.suggest_categorical(name, list(axis))


def suggest_axes(trial: Any, axes: dict[str, Any]) -> dict[str, Any]:
    """Suggest flat, independent axes (FloatRange | IntRange | list of choices) by name."""
    return {name: _pick(trial, name, axis) for name, axis in axes.items()}


class _Recorder:
    """Wraps a trial and records every suggested value (single choices included)."""

    def __init__(self, trial: SuggestTrial) -> None:
        self.trial = trial
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        self.params[name] = self.trial.suggest_categorical(name, choices)
        return self.params[name]

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        self.params[name] = self.trial.suggest_float(name, low, high, log=log)
        return float(self.params[name])

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        value = low if low == high else self.trial.suggest_int(name, low, high, step=step, log=log)
        self.params[name] = value
        return int(value)


def suggest_params(trial: SuggestTrial, space: DesignSpace) -> dict[str, Any]:
    """Sample the space define-by-run; returns the flat params (what Optuna records)."""
    rec = _Recorder(trial)
    _suggest_norms(rec, space.norms)
    placement = _pick(rec, "momentum", space.momentum.placement)
    if placement != "none":
        _pick(rec, "beta", space.momentum.beta)
        _pick(rec, "momentum_position", space.momentum.position)
        _pick(rec, "nesterov", space.momentum.nesterov)
    rank_axis = space.rank.values
    keys = rank_axis if isinstance(rank_axis, IntRange) else [_rank_key(v) for v in rank_axis]
    rank = _pick(rec, "rank", keys)
    if rank != NONE_KEY:
        _pick(rec, "basis", space.rank.basis)
        _pick(rec, "refresh", space.rank.refresh)
        _pick(rec, "complement", space.rank.complement)
    if has_state(space, rec.params):
        _pick(rec, "state_bits", space.state_bits)
    _pick(rec, "lr", space.lr)
    _pick(rec, "weight_decay", space.weight_decay)
    return rec.params


def has_state(space: DesignSpace, params: dict[str, Any]) -> bool:
    """optim_core's ``Design.has_state``: an adam norm, momentum, or a low-rank projector."""
    placement = params.get("momentum", _first(space.momentum.placement))
    rank = _rank_from_params(params, space.rank)
    norms = _norms_from_params(params, space.norms)
    return placement != "none" or "adam" in norms or rank is not None


def _suggest_norms(rec: _Recorder, axis: NormsAxis) -> None:
    if axis.sequences is not None:
        _pick(rec, "norms", [seq_key(s) for s in axis.sequences])
        return
    n = rec.suggest_int("norms_len", axis.min_length, axis.max_length)
    for i in range(n):
        _pick(rec, f"norm_{i}", axis.blocks or [])


def _norms_from_params(params: dict[str, Any], axis: NormsAxis) -> list[str]:
    if axis.sequences is not None:
        key = params.get("norms", seq_key(axis.sequences[0]))
        return [] if key == NONE_KEY else str(key).split(">")
    n = int(params.get("norms_len", axis.min_length))
    blocks = axis.blocks or []
    return [str(params.get(f"norm_{i}", blocks[0])) for i in range(n)]


def _first(axis: Any) -> Any:
    return axis.low if isinstance(axis, FloatRange | IntRange) else axis[0]


def _rank_from_params(params: dict[str, Any], axis: RankAxis) -> int | float | None:
    if isinstance(axis.values, IntRange):
        return int(params.get("rank", axis.values.low))
    by_key = {_rank_key(v): v for v in axis.values}
    return by_key[str(params.get("rank", _rank_key(axis.values[0])))]


def params_to_design(params: dict[str, Any], space: DesignSpace) -> dict[str, Any]:
    """The recipe (design form dict, schema 1) that ``params`` denotes in ``space``.

    Parameters missing from ``params`` take the axis' single/first value, so a params dict that
    :func:`suggest_params` produced (which records fixed choices too) round-trips exactly.
    """
    placement = params.get("momentum", _first(space.momentum.placement))
    momentum: dict[str, Any] = {"placement": placement}
    if placement != "none":
        momentum["beta"] = float(params.get("beta", _first(space.momentum.beta)))
        momentum["position"] = params.get("momentum_position", _first(space.momentum.position))
        momentum["nesterov"] = bool(params.get("nesterov", _first(space.momentum.nesterov)))
    design: dict[str, Any] = {
        "norms": _norms_from_params(params, space.norms),
        "momentum": momentum,
        "rank": _rank_from_params(params, space.rank),
    }
    if design["rank"] is not None:
        design["projection"] = {
            "basis": params.get("basis", _first(space.rank.basis)),
            "refresh": int(params.get("refresh", _first(space.rank.refresh))),
            "complement": params.get("complement", _first(space.rank.complement)),
        }
    default_bits = _first(space.state_bits) if has_state(space, params) else 32
    design["state_bits"] = int(params.get("state_bits", default_bits))
    design.update(space.fixed)
    return {
        "schema": 1,
        "lr": float(params.get("lr", _first(space.lr))),
        "weight_decay": float(params.get("weight_decay", _first(space.weight_decay))),
        "design": design,
    }


def params_to_recipe(params: dict[str, Any], space: DesignSpace) -> Any:
    """``optim_core.Recipe`` for ``params`` (validated by optim_core's own schema)."""
    from optim_core.recipe import Recipe

    return Recipe.model_validate(params_to_design(params, space))


def corner_params(space: DesignSpace) -> Iterator[dict[str, Any]]:
    """Params for every combination of the structural categorical choices (norms, momentum
    placement, rank, state bits where stateful), for validating a space against optim_core."""
    axis = space.norms
    norm_params: list[dict[str, Any]]
    if axis.sequences is not None:
        norm_params = [{"norms": seq_key(s)} for s in axis.sequences]
    else:
        blocks = axis.blocks or []
        norm_params = [
            {"norms_len": n, **{f"norm_{i}": b for i in range(n)}}
            for n in sorted({axis.min_length, axis.max_length})
            for b in blocks
        ]
    ranks = space.rank.values
    rank_keys = (
        [ranks.low, ranks.high] if isinstance(ranks, IntRange) else [_rank_key(v) for v in ranks]
    )
    for norms, placement, rank in itertools.product(
        norm_params, space.momentum.placement, rank_keys
    ):
        params = {**norms, "momentum": placement, "rank": rank}
        bits = space.state_bits if has_state(space, params) else [32]
        for b in bits:
            yield {**params, "state_bits": b}
