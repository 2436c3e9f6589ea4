"""Pipeline specs -> stage objects, and parameter routing.

``STAGE_FACTORIES`` maps a stage spec's ``type`` to a factory ``(spec, ctx) -> Stage``; a new
building block registers itself with :func:`register_stage`. The ``lowrank`` factory and the
quantized codecs (``state_bits`` 8/4) delegate to :mod:`optim_core.lowrank` and
:mod:`optim_core.quantize`.

Routing labels (docs/architecture.md): ``vector`` (ndim < 2), ``embedding`` (a dotted name
component starting with ``embed``, or ``wte``), ``head`` (component ``lm_head``, ``head`` or
``classifier``), ``matrix`` (any other >=2-D parameter).
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from optim_core.adaptive import Adafactor, Adam, AdamMini
from optim_core.base import NATIVE_CODEC, Stage, StateCodec, codec_for_bits
from optim_core.cosmos import Cosmos, CosmosAdam
from optim_core.frugal_block import FrugalBlock
from optim_core.lowrank import LowRank
from optim_core.momentum import Ema
from optim_core.normalize import Normalize, Scale
from optim_core.orthogonalize import Orthogonalize, ShapeScale
from optim_core.quantize import MinMaxCodec
from optim_core.recipe import (
    AdafactorSpec,
    AdamMiniSpec,
    AdamSpec,
    CosmosSpec,
    EmaSpec,
    FrobeniusSpec,
    FrugalBlockSpec,
    LowRankSpec,
    NewtonSchulzSpec,
    NormSpec,
    Pipeline,
    ScaleSpec,
    ShapeScaleSpec,
    SinkhornSpec,
    SvdSpec,
    WeightQuantSpec,
    WhitenSpec,
)
from optim_core.weight_quant import WeightQuant

MATRIX_ONLY = frozenset(
    {"row", "col", "standardize", "sinkhorn", "ns", "svd", "whiten", "lowrank"}
)


@dataclass(frozen=True)
class BuildCtx:
    """Where a stage is built: the parameter, and whether the stage ends the top-level pipeline
    (an Adam stage there folds its bias correction into the lr)."""

    name: str
    shape: tuple[int, ...]
    last: bool = False
    facts: Mapping[str, Any] | None = None  # model facts (``n_heads``, ``n_kv_heads``)
    position: int = 0  # of the parameter among its route's parameters (model order)
    count: int = 1  # parameters in the route


StageFactory = Callable[[Any, BuildCtx], Stage]


def _adam(spec: AdamSpec, ctx: BuildCtx) -> Stage:
    return Adam(
        beta1=spec.beta1,
        beta2=spec.beta2,
        eps=spec.eps,
        style=spec.style,
        codec=codec_for_bits(spec.state_bits, spec.block, signed=True),
        codec_v=codec_for_bits(spec.state_bits, spec.block, signed=False),
        fold_lr=ctx.last,
    )


def _ema(spec: EmaSpec, ctx: BuildCtx) -> Stage:
    return Ema(
        beta=spec.beta,
        form=spec.form,
        dampening=spec.dampening,
        init_first=spec.init == "first",
        output=spec.output,
        interp_beta=spec.interp_beta,
        codec=codec_for_bits(spec.state_bits, spec.block, signed=True),
    )


def _norm(spec: NormSpec, ctx: BuildCtx) -> Stage:
    return Normalize(kind=spec.type, eps=spec.eps, axis=spec.axis)


def _frobenius(spec: FrobeniusSpec, ctx: BuildCtx) -> Stage:
    return Normalize(kind="frobenius", eps=spec.eps, target=spec.target, eps_mode=spec.eps_mode)


def _sinkhorn(spec: SinkhornSpec, ctx: BuildCtx) -> Stage:
    return Normalize(kind="sinkhorn", eps=spec.eps, iters=spec.iters)


def _ns(spec: NewtonSchulzSpec, ctx: BuildCtx) -> Stage:
    dtype = torch.bfloat16 if spec.dtype == "bf16" else torch.float32
    return Orthogonalize(
        method="ns",
        coeffs=spec.coeffs,
        steps=spec.steps,
        eps=spec.eps,
        dtype=dtype,
        op_order=spec.op_order,
    )


def _svd(spec: SvdSpec, ctx: BuildCtx) -> Stage:
    return Orthogonalize(method="svd")


def _whiten(spec: WhitenSpec, ctx: BuildCtx) -> Stage:
    return Orthogonalize(
        method="whiten",
        steps=spec.steps,
        whiten_method=spec.method,
        beta=spec.beta,
        rescale=spec.rescale,
    )


def _shape_scale(spec: ShapeScaleSpec, ctx: BuildCtx) -> Stage:
    return ShapeScale(rule=spec.rule, where=spec.where)


def _scale(spec: ScaleSpec, ctx: BuildCtx) -> Stage:
    return Scale(factor=spec.factor)


def _adafactor(spec: AdafactorSpec, ctx: BuildCtx) -> Stage:
    return Adafactor(beta2_decay=spec.beta2_decay, eps1=spec.eps1, eps2=spec.eps2, d=spec.d)


UNKNOWN_HEADS = 8  # Adam-mini heads assumed (with a warning) when neither spec nor model says


def model_heads(spec: AdamMiniSpec, ctx: BuildCtx) -> int:
    """The head count of an Adam-mini ``head`` block: the spec's, else the model's facts, else
    (bare tensors, no ``model_facts``) ``UNKNOWN_HEADS`` with a ``UserWarning``."""
    if spec.n_heads != "model":
        return int(spec.n_heads)
    facts = ctx.facts or {}
    heads = facts.get(spec.heads) or facts.get("n_heads")
    if isinstance(heads, int) and heads >= 1:
        return heads
    warnings.warn(
        f"parameter {ctx.name!r}: adam_mini takes its head count from the model but none was "
        f"given; assuming {UNKNOWN_HEADS}. Pass build(..., model_facts={{'n_heads': H}}) or "
        "presets.get('adam_mini', n_heads=H, n_kv_heads=K)",
        UserWarning,
        stacklevel=2,
    )
    return UNKNOWN_HEADS


def _adam_mini(spec: AdamMiniSpec, ctx: BuildCtx) -> Stage:
    n_heads = model_heads(spec, ctx) if spec.block == "head" else 1
    if spec.block == "head" and ctx.shape and ctx.shape[0] % n_heads:
        raise ValueError(
            f"parameter {ctx.name!r} with shape {ctx.shape}: adam_mini block 'head' needs rows "
            f"divisible by n_heads={n_heads}"
        )
    return AdamMini(
        beta1=spec.beta1, beta2=spec.beta2, eps=spec.eps, block=spec.block, n_heads=n_heads
    )


def _lowrank(spec: LowRankSpec, ctx: BuildCtx) -> Stage:
    # inner Adam folds bias correction into the lr only when nothing is added after projection
    fold = spec.complement == "drop"
    last = len(spec.inner) - 1
    inner = [
        build_stage(s, replace(ctx, last=s.type == "adam" and fold and i == last))
        for i, s in enumerate(spec.inner)
    ]
    projector: StateCodec | None = None
    if spec.projector_bits is not None:
        projector = MinMaxCodec(spec.projector_bits, spec.projector_group)
    return LowRank(  # type: ignore[return-value]
        inner=inner,
        rank=spec.rank,
        basis=spec.basis,
        refresh=spec.refresh,
        scale=spec.scale,
        complement=spec.complement,
        output=spec.output,
        limiter=spec.limiter,
        scale_front=spec.scale_front,
        reset_on_refresh=spec.reset_on_refresh,
        complement_scale=spec.complement_scale,
        projector_codec=projector,
        adaptive_refresh=spec.adaptive_refresh,
    )


def _weight_quant(spec: WeightQuantSpec, ctx: BuildCtx) -> Stage:
    seed = spec.seed * 100_003 + ctx.position  # one random stream per parameter
    return WeightQuant(
        bits=spec.bits, group_size=spec.group, stochastic=spec.stochastic, seed=seed
    )


def _frugal_block(spec: FrugalBlockSpec, ctx: BuildCtx) -> Stage:
    return FrugalBlock(
        inner=Adam(beta1=spec.beta1, beta2=spec.beta2, eps=spec.eps, codec=NATIVE_CODEC),
        position=ctx.position,
        count=ctx.count,
        density=spec.density,
        refresh=spec.refresh,
        order=spec.order,
        inactive_scale=spec.inactive_scale,
    )


def _cosmos(spec: CosmosSpec, ctx: BuildCtx) -> Stage:
    if len(ctx.shape) < 2 or (spec.max_rows is not None and ctx.shape[0] > spec.max_rows):
        # the reference's Adam branch (vectors, matrices with more than max_rows rows)
        return CosmosAdam(beta1=spec.beta1, beta2=spec.beta2, eps=spec.eps)
    return Cosmos(
        beta1=spec.beta1,
        beta2=spec.beta2,
        eps=spec.eps,
        rank=spec.rank,
        gamma=spec.gamma,
        ratio=spec.ratio,
        nesterov=spec.nesterov,
        ns_dtype=torch.bfloat16 if spec.ns_dtype == "bf16" else torch.float32,
    )


STAGE_FACTORIES: dict[str, StageFactory] = {
    "adam": _adam,
    "ema": _ema,
    "rms": _norm,
    "row": _norm,
    "col": _norm,
    "standardize": _norm,
    "sign": _norm,
    "frobenius": _frobenius,
    "sinkhorn": _sinkhorn,
    "ns": _ns,
    "svd": _svd,
    "whiten": _whiten,
    "shape_scale": _shape_scale,
    "scale": _scale,
    "adafactor": _adafactor,
    "adam_mini": _adam_mini,
    "lowrank": _lowrank,
    "cosmos": _cosmos,
    "frugal_block": _frugal_block,
    "weight_quant": _weight_quant,
}


def register_stage(type_name: str, factory: StageFactory) -> None:
    """Register (or replace) the factory for stage specs with ``type == type_name``."""
    STAGE_FACTORIES[type_name] = factory


def build_stage(spec: Any, ctx: BuildCtx) -> Stage:
    """One stage object from its spec.

    Raises:
        ValueError: no factory for ``spec.type`` (lists the registered types).
    """
    factory = STAGE_FACTORIES.get(spec.type)
    if factory is None:
        raise ValueError(f"stage type {spec.type!r}: no factory; known: {sorted(STAGE_FACTORIES)}")
    return factory(spec, ctx)


def build_stages(
    specs: Sequence[Any],
    name: str,
    shape: tuple[int, ...],
    facts: Mapping[str, Any] | None = None,
    place: tuple[int, int] = (0, 1),
) -> list[Stage]:
    """Stage objects of one route for parameter ``name`` of ``shape`` (checked first);
    ``facts``: model facts some stages need (Adam-mini's ``n_heads``/``n_kv_heads``);
    ``place``: (position of the parameter in its route, parameters in the route)."""
    check_param(specs, name, shape)
    last = len(specs) - 1
    pos, count = place
    return [
        build_stage(s, BuildCtx(name, tuple(shape), i == last, facts, pos, count))
        for i, s in enumerate(specs)
    ]


def route_members(
    pipeline: Pipeline, named_shapes: Sequence[tuple[str, tuple[int, ...]]]
) -> dict[int, list[str]]:
    """Route index -> names of its parameters, in the given (model) order."""
    members: dict[int, list[str]] = {}
    for name, shape in named_shapes:
        members.setdefault(resolve_route(pipeline, name, shape), []).append(name)
    return members


def check_param(specs: Sequence[Any], name: str, shape: tuple[int, ...]) -> None:
    """Raise ValueError (naming the parameter) when a stage cannot handle its shape."""
    for spec in specs:
        if spec.type in MATRIX_ONLY and len(shape) < 2:
            raise ValueError(
                f"parameter {name!r} with shape {tuple(shape)}: stage {spec.type!r} needs a "
                "matrix (>=2-D); route vectors to stages such as adam, ema, sign, rms"
            )
        if spec.type == "lowrank":
            _check_rank(spec, name, shape)
            check_param(spec.inner, name, shape)


def _check_rank(spec: LowRankSpec, name: str, shape: tuple[int, ...]) -> None:
    m, n = shape[0], int(torch.Size(shape[1:]).numel())
    if isinstance(spec.rank, int) and spec.rank > min(m, n):
        raise ValueError(
            f"rank: {spec.rank} exceeds min(m, n) = {min(m, n)} of parameter {name!r} with shape "
            f"{tuple(shape)}; use a smaller int or a fraction in (0, 1)"
        )


def label_of(name: str, shape: Sequence[int]) -> str:
    """Routing label of a parameter: vector, embedding, head or matrix."""
    if len(shape) < 2:
        return "vector"
    parts = name.split(".")
    if any(p.startswith("embed") or p == "wte" for p in parts):
        return "embedding"
    if any(p in ("lm_head", "head", "classifier") for p in parts):
        return "head"
    return "matrix"


def resolve_route(pipeline: Pipeline, name: str, shape: Sequence[int]) -> int:
    """Index of the route of parameter ``name`` (name patterns, then labels, then catch-all).

    Raises:
        ValueError: no route matches (names the parameter, its label and the routes).
    """
    for i, route in enumerate(pipeline.routes):
        if any(fnmatch.fnmatchcase(name, pat) for pat in route.names):
            return i
    label = label_of(name, shape)
    for i, route in enumerate(pipeline.routes):
        if label in route.labels:
            return i
    for i, route in enumerate(pipeline.routes):
        if not route.labels and not route.names:
            return i
    described = [{"labels": r.labels, "names": r.names} for r in pipeline.routes]
    raise ValueError(
        f"parameter {name!r} (label {label!r}) matches no route; routes: {described}; "
        "add its label or a name pattern, or a catch-all route"
    )
