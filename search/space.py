"""The recipe design space: a declarative, validated spec mapped onto Optuna distributions.

A :class:`DesignSpace` lists, for each axis of the recipe design form (docs/architecture.md,
"Recipe design form"), either a set of choices or a numeric range. :func:`suggest` samples it
define-by-run (conditional parameters such as ``beta`` or ``basis`` are only suggested when their
parent is active), :func:`params_to_design` maps a flat Optuna ``params`` dict back to the recipe
dict, and :func:`validate_space` rejects invalid combinations before anything is trained.

This module does not import optuna: ``suggest`` takes any object with Optuna's
``suggest_categorical/suggest_float/suggest_int`` methods (duck typing).

References: Optuna define-by-run API (Akiba et al., KDD 2019); services.md §2.2 (central asker).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: Norm blocks known to the design form (validated again by optim_core when it is importable).
KNOWN_NORMS = frozenset({"adam", "sign", "row", "col", "ns", "standardize", "frobenius"})
PLACEMENTS = ("none", "all", "matrices", "head", "embed_and_head")
POSITIONS = ("before_norm", "after_norm")
BASES = ("svd", "gaussian")
STATE_BITS = (32, 16, 8, 4)
OTHERS = ("adamw", "sgd", "sign", "same")
NONE_KEY = "none"


class SpaceError(ValueError):
    """An invalid design space (raised before any training)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatRange(_Strict):
    """A continuous range (``log`` for learning rates)."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"range needs low < high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"log range needs low > 0, got {self.low}")
        return self


class IntRange(_Strict):
    """An integer range, inclusive."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if not self.low <= self.high:
            raise ValueError(f"range needs low <= high, got [{self.low}, {self.high}]")
        return self


class NormsAxis(_Strict):
    """Either an explicit set of norm sequences or building blocks plus a maximum length."""

    sequences: list[list[str]] | None = None
    blocks: list[str] | None = None
    min_length: int = Field(1, ge=0)
    max_length: int = Field(2, ge=1, le=6)

    @model_validator(mode="after")
    def _one_form(self) -> NormsAxis:
        if (self.sequences is None) == (self.blocks is None):
            raise ValueError("norms: give exactly one of `sequences` or `blocks`")
        if self.sequences is not None and not self.sequences:
            raise ValueError("norms.sequences must not be empty")
        if self.blocks is not None and not self.blocks:
            raise ValueError("norms.blocks must not be empty")
        if self.min_length > self.max_length:
            raise ValueError("norms: min_length > max_length")
        return self


class MomentumAxis(_Strict):
    """Momentum placement; ``beta``/``position``/``nesterov`` apply only when placement != none."""

    placement: list[str] = Field(default_factory=lambda: ["none", "matrices"])
    beta: FloatRange | list[float] = Field(default_factory=lambda: [0.9])
    position: list[str] = Field(default_factory=lambda: ["before_norm"])
    nesterov: list[bool] = Field(default_factory=lambda: [False])


def _no_rank() -> list[int | float | None]:
    return [None]


class RankAxis(_Strict):
    """Low-rank projection; ``basis``/``refresh`` apply only when a rank is chosen."""

    values: list[int | float | None] | IntRange = Field(default_factory=lambda: _no_rank())
    basis: list[str] = Field(default_factory=lambda: ["svd"])
    refresh: list[int] | IntRange = Field(default_factory=lambda: [200])
    complement: list[str] = Field(default_factory=lambda: ["drop"])


class DesignSpace(_Strict):
    """A search space over recipe designs (YAML/JSON; unknown keys are rejected)."""

    schema_version: int = Field(1, alias="schema")
    name: str = "space"
    norms: NormsAxis
    momentum: MomentumAxis = Field(default_factory=MomentumAxis)
    rank: RankAxis = Field(default_factory=RankAxis)
    state_bits: list[int] = Field(default_factory=lambda: [32])
    lr: FloatRange | list[float]
    weight_decay: FloatRange | list[float] = Field(default_factory=lambda: [0.0])
    fixed: dict[str, Any] = Field(default_factory=lambda: {"other": "adamw"})

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SuggestTrial(Protocol):
    """The part of ``optuna.trial.Trial`` that :func:`suggest` uses."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...


# --------------------------------------------------------------------------------------------
# loading and validation
# --------------------------------------------------------------------------------------------


def load_space(source: str | Path | dict[str, Any]) -> DesignSpace:
    """Parse a space from a dict, a YAML/JSON file path, or YAML/JSON text; then validate it."""
    if isinstance(source, dict):
        data = source
    else:
        text = str(source)
        path = Path(text)
        if "\n" not in text and path.suffix in {".yaml", ".yml", ".json"}:
            text = path.read_text()
        data = _parse_text(text)
    try:
        space = DesignSpace.model_validate(data)
    except ValidationError as exc:
        raise SpaceError(f"invalid design space: {exc}") from exc
    validate_space(space)
    return space


def _parse_text(text: str) -> dict[str, Any]:
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return dict(json.loads(text))
    import yaml

    loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise SpaceError("a design space must be a mapping")
    return loaded


@cache
def default_space() -> DesignSpace:
    """The shipped default space (``search/default_space.yaml``) covering the seed designs."""
    # next to this module (package data); not importlib.resources: tests/search would make
    # ``search`` look like a namespace package under pytest's rootdir sys.path
    text = (Path(__file__).parent / "default_space.yaml").read_text()
    return load_space(text)


def _check_subset(label: str, values: list[Any], allowed: tuple[Any, ...] | frozenset) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise SpaceError(f"{label}: unknown value(s) {bad}; allowed: {sorted(map(str, allowed))}")
    if not values:
        raise SpaceError(f"{label}: needs at least one choice")


def validate_space(space: DesignSpace) -> None:
    """Reject invalid combinations with a clear :class:`SpaceError` (before any training)."""
    _validate_norms(space.norms)
    m = space.momentum
    _check_subset("momentum.placement", m.placement, PLACEMENTS)
    _check_subset("momentum.position", m.position, POSITIONS)
    betas = [m.beta.low, m.beta.high] if isinstance(m.beta, FloatRange) else m.beta
    if any(not 0.0 <= b < 1.0 for b in betas):
        raise SpaceError(f"momentum.beta must lie in [0, 1), got {betas}")
    _validate_rank(space.rank)
    _check_subset("state_bits", space.state_bits, STATE_BITS)
    lrs = [space.lr.low, space.lr.high] if isinstance(space.lr, FloatRange) else space.lr
    if not lrs or any(lr <= 0 for lr in lrs):
        raise SpaceError(f"lr must be > 0, got {lrs}")
    wds = space.weight_decay
    wd_vals = [wds.low, wds.high] if isinstance(wds, FloatRange) else wds
    if not wd_vals or any(w < 0 for w in wd_vals):
        raise SpaceError(f"weight_decay must be >= 0, got {wd_vals}")
    if isinstance(wds, FloatRange) and wds.log and wds.low <= 0:
        raise SpaceError("weight_decay log range needs low > 0")
    if set(space.state_bits) != {32} and m.placement == ["none"] and _no_stateful_norm(space):
        raise SpaceError(
            "state_bits < 32 is meaningless when no choice keeps optimizer state "
            "(momentum placement is only 'none' and no stateful norm block); drop state_bits"
        )
    other = space.fixed.get("other", "adamw")
    _check_subset("fixed.other", [other], OTHERS)
    clash = set(space.fixed) & {"norms", "momentum", "rank", "projection", "state_bits"}
    if clash:
        raise SpaceError(f"fixed parts may not also be searched axes: {sorted(clash)}")
    _validate_with_optim_core(space)


def _validate_with_optim_core(space: DesignSpace) -> None:
    """When optim_core is importable, every norm sequence's recipe must pass its schema."""
    try:
        import optim_core

        recipe_cls = optim_core.Recipe  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        return
    seqs = space.norms.sequences or [[b] for b in space.norms.blocks or []]
    for seq in seqs:
        params = (
            {"norms": _seq_key(seq)}
            if space.norms.sequences is not None
            else {"norms_len": 1, "norm_0": seq[0]}
        )
        design = params_to_design(params, space)
        try:
            recipe_cls.model_validate(design)
        except ValueError as exc:
            raise SpaceError(f"norms {seq}: optim_core rejects the recipe: {exc}") from exc


def _no_stateful_norm(space: DesignSpace) -> bool:
    blocks = _norm_blocks(space.norms)
    return "adam" not in blocks


def _norm_blocks(axis: NormsAxis) -> set[str]:
    if axis.blocks is not None:
        return set(axis.blocks)
    return {b for seq in axis.sequences or [] for b in seq}


def _validate_norms(axis: NormsAxis) -> None:
    blocks = _norm_blocks(axis)
    _check_subset("norms", sorted(blocks) or ["row"], KNOWN_NORMS)
    seqs = axis.sequences or []
    for seq in seqs:
        if "adam" in seq and len(seq) > 1:
            raise SpaceError(
                f"norms: 'adam' is a complete update rule and stands alone, got {seq}"
            )
    keys = [_seq_key(s) for s in seqs]
    if len(set(keys)) != len(keys):
        raise SpaceError(f"norms.sequences has duplicates: {keys}")


def _validate_rank(axis: RankAxis) -> None:
    values = axis.values
    if isinstance(values, IntRange):
        if values.low < 1:
            raise SpaceError("rank range must start at >= 1")
    else:
        if not values:
            raise SpaceError("rank.values needs at least one choice (use [null] for no rank)")
        for v in values:
            if v is None:
                continue
            if isinstance(v, float) and not 0.0 < v < 1.0:
                raise SpaceError(f"rank fraction must lie in (0, 1), got {v}")
            if isinstance(v, int) and v < 1:
                raise SpaceError(f"rank must be >= 1, got {v}")
    _check_subset("rank.basis", axis.basis, BASES)
    _check_subset("rank.complement", axis.complement, ("drop", "sign"))
    refresh = axis.refresh
    lows = [refresh.low] if isinstance(refresh, IntRange) else refresh
    if not lows or min(lows) < 1:
        raise SpaceError(f"rank.refresh must be >= 1, got {refresh}")


# --------------------------------------------------------------------------------------------
# space -> params (define-by-run) -> recipe dict
# --------------------------------------------------------------------------------------------


def _seq_key(seq: list[str]) -> str:
    return ">".join(seq) if seq else NONE_KEY


def _rank_key(value: int | float | None) -> str:
    return NONE_KEY if value is None else repr(value)


def _pick(trial: SuggestTrial, name: str, axis: Any) -> Any:
    """Suggest one axis value; single choices are fixed (no Optuna parameter)."""
    if isinstance(axis, FloatRange):
        return trial.suggest_float(name, axis.low, axis.high, log=axis.log)
    if isinstance(axis, IntRange):
        return trial.suggest_int(name, axis.low, axis.high, step=axis.step, log=axis.log)
    if len(axis) == 1:
        return axis[0]
    return trial.suggest_categorical(name, list(axis))


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
    if isinstance(rank_axis, IntRange):
        rank: Any = _pick(rec, "rank", rank_axis)
    else:
        keys = [_rank_key(v) for v in rank_axis]
        rank = _pick(rec, "rank", keys)
    if rank != NONE_KEY:
        _pick(rec, "basis", space.rank.basis)
        _pick(rec, "refresh", space.rank.refresh)
        _pick(rec, "complement", space.rank.complement)
    if _has_state(space, placement, rec.params):
        _pick(rec, "state_bits", space.state_bits)
    _pick(rec, "lr", space.lr)
    _pick(rec, "weight_decay", space.weight_decay)
    return rec.params


def _has_state(space: DesignSpace, placement: str, params: dict[str, Any]) -> bool:
    norms = _norms_from_params(params, space.norms)
    return placement != "none" or "adam" in norms


def _suggest_norms(rec: _Recorder, axis: NormsAxis) -> None:
    if axis.sequences is not None:
        _pick(rec, "norms", [_seq_key(s) for s in axis.sequences])
        return
    blocks = axis.blocks or []
    n = rec.suggest_int("norms_len", axis.min_length, axis.max_length)
    for i in range(n):
        _pick(rec, f"norm_{i}", blocks)


class _Recorder:
    """Wraps a trial and records every suggested value (single choices included)."""

    def __init__(self, trial: SuggestTrial) -> None:
        self.trial = trial
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        value = self.trial.suggest_categorical(name, choices)
        self.params[name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        value = self.trial.suggest_float(name, low, high, log=log)
        self.params[name] = value
        return value

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        if low == high:
            self.params[name] = low
            return low
        value = self.trial.suggest_int(name, low, high, step=step, log=log)
        self.params[name] = value
        return value


def _norms_from_params(params: dict[str, Any], axis: NormsAxis) -> list[str]:
    if axis.sequences is not None:
        key = params.get("norms", _seq_key(axis.sequences[0]))
        return [] if key == NONE_KEY else str(key).split(">")
    n = int(params.get("norms_len", axis.min_length))
    blocks = axis.blocks or []
    return [str(params.get(f"norm_{i}", blocks[0])) for i in range(n)]


def _first(axis: Any) -> Any:
    return axis.low if isinstance(axis, FloatRange | IntRange) else axis[0]


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
    }
    design["rank"] = _rank_from_params(params, space.rank)
    if design["rank"] is not None:
        design["projection"] = {
            "basis": params.get("basis", _first(space.rank.basis)),
            "refresh": int(params.get("refresh", _first(space.rank.refresh))),
            "complement": params.get("complement", _first(space.rank.complement)),
        }
    stateful = _has_state(space, placement, params)
    default_bits = _first(space.state_bits) if stateful else 32
    design["state_bits"] = int(params.get("state_bits", default_bits))
    design.update(space.fixed)
    return {
        "schema": 1,
        "lr": float(params.get("lr", _first(space.lr))),
        "weight_decay": float(params.get("weight_decay", _first(space.weight_decay))),
        "design": design,
    }


def _rank_from_params(params: dict[str, Any], axis: RankAxis) -> int | float | None:
    if isinstance(axis.values, IntRange):
        return int(params.get("rank", axis.values.low))
    by_key = {_rank_key(v): v for v in axis.values}
    return by_key[str(params.get("rank", _rank_key(axis.values[0])))]


def params_to_recipe(params: dict[str, Any], space: DesignSpace) -> Any:
    """``optim_core.Recipe`` for ``params`` (validated by optim_core's own schema)."""
    import optim_core

    recipe_cls = optim_core.Recipe  # type: ignore[attr-defined]
    return recipe_cls.model_validate(params_to_design(params, space))


def suggest(trial: SuggestTrial, space: DesignSpace) -> Any:
    """Define-by-run: suggest params on ``trial`` and return the validated ``Recipe``."""
    return params_to_recipe(suggest_params(trial, space), space)
