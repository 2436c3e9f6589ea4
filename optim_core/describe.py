"""``describe(recipe)``: the design axes (or the pipeline routes) of a recipe in words."""

from __future__ import annotations

from typing import Any

from optim_core.recipe import Design, Pipeline, Recipe

_NORM_WORDS = {
    "adam": "Adam (second-moment) scaling",
    "sign": "sign",
    "row": "row-wise RMS normalization",
    "col": "column-wise RMS normalization",
    "rms": "tensor RMS normalization",
    "frobenius": "Frobenius normalization",
    "standardize": "standardization along the larger side",
    "sinkhorn": "Sinkhorn row/column normalization",
    "ns": "Newton-Schulz orthogonalization",
    "svd": "exact orthogonalization (SVD)",
    "whiten": "whitening",
}


def describe(recipe: Recipe) -> str:
    """Multi-line text: lr / weight decay, then the four design axes or each route's stages."""
    head = f"lr {recipe.lr:g}, weight decay {recipe.weight_decay:g}"
    if recipe.name:
        head = f"{recipe.name}: {head}"
    body = _design(recipe.design) if recipe.design is not None else _pipeline(recipe.to_pipeline())
    return "\n".join([head, *body])


def _design(d: Design) -> list[str]:
    norms = ", then ".join(_NORM_WORDS[n] for n in d.norms) or "raw gradient"
    lines = [f"norms: {norms}"]
    if d.momentum is None or d.momentum.placement == "none":
        lines.append("momentum: none")
    else:
        m = d.momentum
        nest = ", Nesterov" if m.nesterov else ""
        lines.append(f"momentum: beta {m.beta:g} on {m.placement}, {m.position}{nest}")
    if d.rank is None:
        lines.append("rank: full")
    else:
        p = d.projection
        basis = p.basis if p else "svd"
        refresh = p.refresh if p else 200
        lines.append(f"rank: {d.rank} ({basis} basis, refresh every {refresh} steps)")
    lines.append(f"state bits: {d.state_bits}")
    lines.append(f"embeddings/head/vectors: {d.other}")
    return lines


def _stage_words(spec: Any) -> str:
    if spec.type == "lowrank":
        inner = " -> ".join(_stage_words(s) for s in spec.inner) or "identity"
        return f"lowrank(rank {spec.rank}, {spec.basis}, refresh {spec.refresh}: {inner})"
    fields = spec.model_dump(exclude={"type"})
    bits = fields.pop("state_bits", 32)
    suffix = f" [{bits}-bit state]" if bits != 32 else ""
    return f"{spec.type}{suffix}"


def _pipeline(p: Pipeline) -> list[str]:
    lines = []
    for route in p.routes:
        who = ", ".join([*route.labels, *route.names]) or "all other"
        stages = " -> ".join(_stage_words(s) for s in route.stages) or "plain gradient"
        extra = f" (lr x{route.lr_mult:g})" if route.lr_mult != 1.0 else ""
        extra = f" (lr {route.lr:g}, fixed)" if route.lr is not None else extra
        lines.append(f"{who}: {stages}{extra}")
    return lines
