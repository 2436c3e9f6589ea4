"""The pipeline form (stages per route) and the design form (four axes) of a recipe.

Pure data (pydantic v2, ``extra="forbid"``), no torch. :mod:`optim_core.designs` compiles a
:class:`Design` to a :class:`Pipeline` and :mod:`optim_core.recipe` wraps either in a ``Recipe``;
both import this module, which imports neither. Leaf stage specs live in
:mod:`optim_core.stage_specs`.

References: optax ``chain`` / ``partition`` (pipelines and routing by label);
docs/references.md#vocabulary.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from optim_core.stage_specs import (
    AdafactorSpec,
    AdamMiniSpec,
    AdamSpec,
    EmaSpec,
    FrobeniusSpec,
    FrugalBlockSpec,
    NewtonSchulzSpec,
    NormSpec,
    ScaleSpec,
    ShapeScaleSpec,
    SinkhornSpec,
    StateBits,
    SvdSpec,
    WeightQuantSpec,
    WhitenSpec,
    _OmitDefaults,
    _Strict,
)

Label = Literal["matrix", "embedding", "head", "vector"]
LABELS: tuple[str, ...] = ("matrix", "embedding", "head", "vector")
WdMode = Literal["decoupled_before", "decoupled_after", "coupled"]
NormName = Literal[
    "adam",
    "sign",
    "row",
    "col",
    "rms",
    "frobenius",
    "standardize",
    "sinkhorn",
    "ns",
    "svd",
    "whiten",
]
NORM_NAMES: tuple[str, ...] = NormName.__args__  # type: ignore[attr-defined]
Placement = Literal["none", "all", "matrices", "head", "embed_and_head"]
Other = Literal["adamw", "sgd", "sign", "same"]


# ---------------------------------------------------------------------------------------------
# specs that wrap or compose other stages (runtime: optim_core.cosmos, optim_core.lowrank)
# ---------------------------------------------------------------------------------------------


class CosmosSpec(_Strict):
    """COSMOS (docs/references.md#cosmos) on a hidden matrix: eigen-Adam on a tracked rank-``rank``
    input subspace + Newton–Schulz on the complement; vectors and matrices with more than
    ``max_rows`` rows take the reference's Adam branch (``optim_core.cosmos.CosmosAdam``), as
    ``COSMOS_optim.py`` does for ``size(0) > 10000``."""

    type: Literal["cosmos"] = "cosmos"
    beta1: float = Field(0.95, ge=0.0, lt=1.0)
    beta2: float = Field(0.95, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, ge=0.0)
    rank: int = Field(64, ge=1)
    gamma: float = Field(0.2, ge=0.0)
    ratio: float = Field(0.2, gt=0.0)
    nesterov: bool = True
    ns_dtype: Literal["bf16", "fp32"] = "bf16"
    max_rows: int | None = Field(10000, ge=1)


class LowRankSpec(_Strict):
    """Run ``inner`` stages on a rank-r projection of the update (GaLore / APOLLO / FRUGAL)."""

    type: Literal["lowrank"] = "lowrank"
    rank: int | float
    inner: list[StageSpec]
    basis: Literal["svd", "gaussian"] = "svd"
    refresh: int = Field(200, ge=1)
    scale: float = 1.0
    complement: Literal["drop", "sign"] = "drop"
    complement_scale: float = 1.0
    output: Literal["project_back", "channel", "tensor"] = "project_back"
    limiter: bool = False
    scale_front: bool = False
    reset_on_refresh: bool = False
    projector_bits: Literal[8, 4] | None = None  # None: P in the param dtype
    projector_group: int = Field(256, gt=0)
    adaptive_refresh: bool = False  # Q-GaLore lazy layer-adaptive refresh (cos 0.4, queue 5)

    @field_validator("rank")
    @classmethod
    def _rank(cls, v: int | float) -> int | float:
        checked = _check_rank(v)
        assert checked is not None
        return checked


StageSpec = Annotated[
    AdamSpec
    | EmaSpec
    | NormSpec
    | FrobeniusSpec
    | SinkhornSpec
    | NewtonSchulzSpec
    | SvdSpec
    | WhitenSpec
    | ShapeScaleSpec
    | ScaleSpec
    | AdafactorSpec
    | AdamMiniSpec
    | LowRankSpec
    | CosmosSpec
    | FrugalBlockSpec
    | WeightQuantSpec,
    Field(discriminator="type"),
]


def _check_rank(v: int | float | None) -> int | float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        raise ValueError("rank: must be an int >= 1 or a fraction in (0, 1), got a bool")
    if isinstance(v, int):
        if v < 1:
            raise ValueError(f"rank: an int rank must be >= 1, got {v}")
        return v
    if float(v).is_integer() and v >= 1:
        return int(v)
    if not 0.0 < v < 1.0:
        raise ValueError(f"rank: a fractional rank must lie in (0, 1), got {v}")
    return float(v)


class Route(_OmitDefaults):
    """Parameters matched by ``names`` (fnmatch globs, checked first) or ``labels``; both empty
    = catch-all. Each route has its own stages, lr and weight decay.

    The route's lr is relative (``lr_mult`` × the recipe's or ``build``'s lr, so lr sweeps move
    it) or absolute (``lr``: fixed, e.g. a secondary Adam lr a paper pins; only the lr schedule
    scales it). Give one of them.
    """

    omit_if_default: ClassVar[tuple[str, ...]] = ("lr",)

    labels: list[Label] = []
    names: list[str] = []
    stages: list[StageSpec] = []
    lr_mult: float = Field(1.0, ge=0.0)
    lr: float | None = Field(None, gt=0.0)  # absolute lr; None: relative (lr_mult)
    weight_decay: float | None = Field(None, ge=0.0)  # None: the recipe's weight_decay
    wd_mode: WdMode = "decoupled_before"

    @model_validator(mode="after")
    def _one_lr(self) -> Route:
        if self.lr is not None and self.lr_mult != 1.0:
            raise ValueError(
                "route: give either 'lr' (absolute) or 'lr_mult' (relative), not both"
            )
        return self

    def group_lr(self, base_lr: float) -> float:
        """This route's lr when the recipe's base lr is ``base_lr``."""
        return self.lr if self.lr is not None else base_lr * self.lr_mult


class Pipeline(_Strict):
    """Ordered routes; a parameter takes the first route whose name pattern matches, else the
    first route listing its label, else the first catch-all route."""

    routes: list[Route] = Field(min_length=1)


# ---------------------------------------------------------------------------------------------
# design form
# ---------------------------------------------------------------------------------------------


class Momentum(_Strict):
    """Where the momentum EMA sits (placement by route label) and where in the norm sequence."""

    beta: float = Field(0.9, ge=0.0, lt=1.0)
    placement: Placement = "matrices"
    position: Literal["before_norm", "after_norm"] = "before_norm"
    nesterov: bool = False


class Projection(_Strict):
    """Low-rank projection of matrix updates (used when ``rank`` is set)."""

    basis: Literal["svd", "gaussian"] = "svd"
    refresh: int = Field(200, ge=1)
    scale: float = 1.0
    complement: Literal["drop", "sign"] = "drop"


class Design(_Strict):
    """The four search axes: norms, momentum, rank (+projection), state_bits; plus ``other``."""

    norms: list[NormName] = []
    momentum: Momentum | None = None
    rank: int | float | None = None
    projection: Projection | None = None
    state_bits: StateBits = 32
    other: Other = "adamw"

    @field_validator("rank")
    @classmethod
    def _rank(cls, v: int | float | None) -> int | float | None:
        return _check_rank(v)

    @model_validator(mode="after")
    def _consistent(self) -> Design:
        if self.projection is not None and self.rank is None:
            raise ValueError("design.projection: only meaningful with design.rank set")
        if self.state_bits < 32 and not self.has_state():
            raise ValueError(
                f"design.state_bits: {self.state_bits}-bit state on a design without optimizer "
                "state (norms have no 'adam', momentum placement is 'none', rank is null); "
                "use state_bits: 32"
            )
        return self

    def has_state(self) -> bool:
        """Whether the design's own axes keep state (adam norm, momentum or a projector)."""
        moving = self.momentum is not None and self.momentum.placement != "none"
        return "adam" in self.norms or moving or self.rank is not None


LowRankSpec.model_rebuild()
Route.model_rebuild()
