"""Design form -> pipeline form (pure data, no torch).

Rules (documented in docs/recipes.md):
- ``matrix`` route: optional momentum EMA (``position`` before or after the norms), then the
  norms in order; ``ns``/``svd`` are followed by Muon's shape scale on the lr; ``standardize``
  runs along the larger side and ``whiten`` is the exact whitening rescaled to RMS 1; with ``rank`` set
  the whole matrix pipeline runs inside a ``lowrank`` stage.
- ``embedding`` / ``head`` / ``vector`` routes follow ``other``: ``adamw`` (Adam, torch ε),
  ``sgd`` (heavy-ball momentum when the placement covers the route, else plain SGD), ``sign``
  (Signum / signSGD), ``same`` (the matrix norms; vectors fall back to Adam since the matrix
  norms need 2-D tensors).
- Momentum placement: ``all`` = every route, ``matrices``, ``head``, ``embed_and_head``; Adam
  routes keep only their own first moment.
- ``state_bits`` applies to every stateful stage of the recipe; weight decay is decoupled,
  applied before the step, on every route.
"""

from __future__ import annotations

from optim_core.forms import Design, LowRankSpec, Pipeline, Route, StageSpec
from optim_core.stage_specs import (
    AdamSpec,
    EmaSpec,
    FrobeniusSpec,
    NewtonSchulzSpec,
    NormSpec,
    ShapeScaleSpec,
    SinkhornSpec,
    SvdSpec,
    WhitenSpec,
)

_PLACED: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "all": frozenset({"matrix", "embedding", "head", "vector"}),
    "matrices": frozenset({"matrix"}),
    "head": frozenset({"head"}),
    "embed_and_head": frozenset({"embedding", "head"}),
}


def _norm_stages(name: str, bits: int) -> list[StageSpec]:
    if name == "adam":
        return [AdamSpec(state_bits=bits)]
    if name == "frobenius":
        return [FrobeniusSpec()]
    if name == "sinkhorn":
        return [SinkhornSpec()]
    if name == "ns":
        return [NewtonSchulzSpec(), ShapeScaleSpec()]
    if name == "svd":
        return [SvdSpec(), ShapeScaleSpec()]
    if name == "whiten":  # RMS 1 like the other design norms
        return [WhitenSpec(rescale=True)]
    if name == "standardize":  # SWAN GradNorm: along the larger side
        return [NormSpec(type="standardize", axis="larger")]
    return [NormSpec(type=name)]  # type: ignore[arg-type]


def _momentum(design: Design) -> EmaSpec | None:
    mom = design.momentum
    if mom is None:
        return None
    out = "nesterov_lerp" if mom.nesterov else "state"
    return EmaSpec(beta=mom.beta, output=out, state_bits=design.state_bits)


def _with_momentum(design: Design, label: str, norms: list[StageSpec]) -> list[StageSpec]:
    mom = _momentum(design)
    placement = design.momentum.placement if design.momentum is not None else "none"
    if mom is None or label not in _PLACED[placement]:
        return norms
    if design.momentum is not None and design.momentum.position == "after_norm":
        return [*norms, mom]
    return [mom, *norms]


def _matrix_stages(design: Design, label: str) -> list[StageSpec]:
    norms = [s for n in design.norms for s in _norm_stages(n, design.state_bits)]
    return _with_momentum(design, label, norms)


def _other_stages(design: Design, label: str) -> list[StageSpec]:
    other = design.other
    bits = design.state_bits
    if other == "same" and label != "vector":
        return _matrix_stages(design, label)
    if other in ("adamw", "same"):
        return [AdamSpec(state_bits=bits)]
    covered = design.momentum is not None and label in _PLACED[design.momentum.placement]
    if other == "sgd":
        if not covered or design.momentum is None:
            return []
        return [
            EmaSpec(beta=design.momentum.beta, form="heavy_ball", init="first", state_bits=bits)
        ]
    return [*_with_momentum(design, label, []), NormSpec(type="sign")]


def design_to_pipeline(design: Design) -> Pipeline:
    """The pipeline form of ``design`` (routes matrix, embedding, head, vector in that order)."""
    matrix = _matrix_stages(design, "matrix")
    if design.rank is not None:
        proj = design.projection
        lowrank = LowRankSpec(
            rank=design.rank,
            inner=matrix,
            basis=proj.basis if proj else "svd",
            refresh=proj.refresh if proj else 200,
            scale=proj.scale if proj else 1.0,
            complement=proj.complement if proj else "drop",
        )
        matrix = [lowrank]
    routes = [Route(labels=["matrix"], stages=matrix)]
    routes += [
        Route(labels=[lab], stages=_other_stages(design, lab))
        for lab in ("embedding", "head", "vector")
    ]  # type: ignore[list-item]
    return Pipeline(routes=routes)
