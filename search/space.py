"""The recipe design space: a declarative, validated spec of the axes Optuna searches.

A :class:`DesignSpace` lists, for each axis of the recipe design form (docs/architecture.md,
"Recipe design form"), either a set of choices or a numeric range; :func:`load_space` parses
YAML/JSON and :func:`validate_space` rejects invalid combinations before anything is trained,
using optim_core's own vocabulary (``optim_core.recipe``) and schema. Sampling and the mapping
back to a recipe are in :mod:`search.suggest`.

No optuna and no torch at import time (the API imports this module); optim_core is imported
when a space is validated.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import Invalid

NONE_KEY = "none"
#: Design fields a space may fix instead of searching (the routing of embeddings/head/vectors).
FIXABLE = ("other",)
SEARCHED = ("norms", "momentum", "rank", "projection", "state_bits")
#: Combinations of categorical choices a space may have (each is validated by optim_core).
MAX_CORNERS = 20_000


@cache
def vocabulary() -> dict[str, tuple[Any, ...]]:
    """Allowed values of each categorical axis, read from optim_core's recipe schema."""
    from optim_core import recipe as r

    def choices(model: type[BaseModel], field: str) -> tuple[Any, ...]:
        return get_args(model.model_fields[field].annotation)

    return {
        "norms": tuple(r.NORM_NAMES),
        "placement": get_args(r.Placement),
        "position": choices(r.Momentum, "position"),
        "basis": choices(r.Projection, "basis"),
        "complement": choices(r.Projection, "complement"),
        "state_bits": get_args(r.StateBits),
        "other": get_args(r.Other),
    }


class SpaceError(Invalid):
    """An invalid design space (raised before any training); ``field`` locates it in a spec."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg, ("space",))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


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


def _check_subset(label: str, values: list[Any], allowed: tuple[Any, ...]) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise SpaceError(f"{label}: unknown value(s) {bad}; allowed: {sorted(map(str, allowed))}")
    if not values:
        raise SpaceError(f"{label}: needs at least one choice")


def validate_space(space: DesignSpace) -> None:
    """Reject invalid combinations with a clear :class:`SpaceError` (before any training)."""
    vocab = vocabulary()
    _validate_norms(space.norms, vocab["norms"])
    m = space.momentum
    _check_subset("momentum.placement", m.placement, vocab["placement"])
    _check_subset("momentum.position", m.position, vocab["position"])
    betas = [m.beta.low, m.beta.high] if isinstance(m.beta, FloatRange) else m.beta
    if not betas or any(not 0.0 <= b < 1.0 for b in betas):
        raise SpaceError(f"momentum.beta must lie in [0, 1), got {betas}")
    _validate_rank(space.rank, vocab)
    _check_subset("state_bits", space.state_bits, vocab["state_bits"])
    lrs = [space.lr.low, space.lr.high] if isinstance(space.lr, FloatRange) else space.lr
    if not lrs or any(lr <= 0 for lr in lrs):
        raise SpaceError(f"lr must be > 0, got {lrs}")
    wds = space.weight_decay
    wd_vals = [wds.low, wds.high] if isinstance(wds, FloatRange) else wds
    if not wd_vals or any(w < 0 for w in wd_vals):
        raise SpaceError(f"weight_decay must be >= 0, got {wd_vals}")
    if set(space.state_bits) != {32} and not _any_state(space):
        raise SpaceError(
            "state_bits < 32 is meaningless when no choice keeps optimizer state "
            "(momentum placement only 'none', no 'adam' norm, rank only null); drop state_bits"
        )
    _validate_fixed(space.fixed, vocab)
    _validate_with_optim_core(space)


def _validate_fixed(fixed: dict[str, Any], vocab: dict[str, tuple[Any, ...]]) -> None:
    clash = sorted(set(fixed) & set(SEARCHED))
    if clash:
        raise SpaceError(f"fixed parts may not also be searched axes: {clash}")
    unknown = sorted(set(fixed) - set(FIXABLE))
    if unknown:
        raise SpaceError(f"fixed: unknown key(s) {unknown}; allowed: {list(FIXABLE)}")
    _check_subset("fixed.other", [fixed.get("other", "adamw")], vocab["other"])


def _validate_with_optim_core(space: DesignSpace) -> None:
    """Every combination of categorical choices must be a recipe optim_core accepts.

    A space with more than ``MAX_CORNERS`` combinations (e.g. long lists of repeated choices)
    is refused up front rather than left to validate for hours.
    """
    from optim_core.recipe import Recipe
    from search.suggest import corner_params, params_to_design

    if _n_corners(space) > MAX_CORNERS:
        raise SpaceError(
            f"the space has more than {MAX_CORNERS} combinations of its categorical choices "
            "(norms x momentum placement x rank x state_bits); narrow it"
        )
    for params in corner_params(space):
        try:
            Recipe.model_validate(params_to_design(params, space))
        except ValueError as exc:
            raise SpaceError(f"optim_core rejects the design {params}: {exc}") from exc


def _n_corners(space: DesignSpace) -> int:
    """An upper bound on what :func:`search.suggest.corner_params` yields (computed, not run)."""
    axis = space.norms
    if axis.sequences is not None:
        n_norms = len(axis.sequences)
    else:
        n_norms = len({axis.min_length, axis.max_length}) * len(axis.blocks or [])
    ranks = space.rank.values
    n_ranks = 2 if isinstance(ranks, IntRange) else len(ranks)
    return n_norms * len(space.momentum.placement) * n_ranks * max(1, len(space.state_bits))


def _any_state(space: DesignSpace) -> bool:
    placements = set(space.momentum.placement) - {"none"}
    ranks = space.rank.values
    has_rank = isinstance(ranks, IntRange) or any(v is not None for v in ranks)
    return bool(placements) or "adam" in norm_blocks(space.norms) or has_rank


def norm_blocks(axis: NormsAxis) -> set[str]:
    if axis.blocks is not None:
        return set(axis.blocks)
    return {b for seq in axis.sequences or [] for b in seq}


def _validate_norms(axis: NormsAxis, known: tuple[Any, ...]) -> None:
    _check_subset("norms", sorted(norm_blocks(axis)), known)
    seqs = axis.sequences or []
    for seq in seqs:
        if "adam" in seq and len(seq) > 1:
            raise SpaceError(
                f"norms: 'adam' is a complete update rule and stands alone, got {seq}"
            )
    keys = [seq_key(s) for s in seqs]
    if len(set(keys)) != len(keys):
        raise SpaceError(f"norms.sequences has duplicates: {keys}")
    if axis.blocks is not None and "adam" in axis.blocks and axis.max_length > 1:
        raise SpaceError("norms.blocks: 'adam' stands alone; list it in `sequences` instead")


def seq_key(seq: list[str]) -> str:
    """The categorical value Optuna records for a norm sequence (``row>col``)."""
    return ">".join(seq) if seq else NONE_KEY


def _validate_rank(axis: RankAxis, vocab: dict[str, tuple[Any, ...]]) -> None:
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
    _check_subset("rank.basis", axis.basis, vocab["basis"])
    _check_subset("rank.complement", axis.complement, vocab["complement"])
    refresh = axis.refresh
    lows = [refresh.low] if isinstance(refresh, IntRange) else refresh
    if not lows or min(lows) < 1:
        raise SpaceError(f"rank.refresh must be >= 1, got {refresh}")
