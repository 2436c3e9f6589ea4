"""The design axes of a stored recipe in words, from its canonical JSON (no torch, no optim_core).

``optim_core.describe`` needs torch; the API process must not import it, so the pages describe
the canonical dict themselves, line for line as ``optim_core.describe`` does (a test keeps the
two in step over every preset). Unknown forms are shown as-is rather than guessed at.
"""

from __future__ import annotations

from typing import Any

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


def describe_canonical(canonical: dict[str, Any] | None) -> list[str]:
    """Lines: lr / weight decay, then the design axes (design form) or each route's stages."""
    if not canonical:
        return ["(no recipe stored)"]
    head = f"lr {_g(canonical.get('lr'))}, weight decay {_g(canonical.get('weight_decay', 0.0))}"
    design, pipeline = canonical.get("design"), canonical.get("pipeline")
    if isinstance(design, dict):
        return [head, *_design(design)]
    if isinstance(pipeline, dict) and isinstance(pipeline.get("routes"), list):
        return [head, *_pipeline(pipeline["routes"])]
    rest = {
        k: v for k, v in canonical.items() if k not in {"schema", "name", "lr", "weight_decay"}
    }
    return [head, *(f"{k}: {_short(v)}" for k, v in rest.items())]


def _design(d: dict[str, Any]) -> list[str]:
    norms = ", then ".join(_NORM_WORDS.get(str(n), str(n)) for n in d.get("norms") or [])
    lines = [f"norms: {norms or 'raw gradient'}"]
    m = d.get("momentum")
    if not isinstance(m, dict) or m.get("placement") == "none":
        lines.append("momentum: none")
    else:
        nest = ", Nesterov" if m.get("nesterov") else ""
        lines.append(
            f"momentum: beta {_g(m.get('beta', 0.9))} on {m.get('placement', 'matrices')}, "
            f"{m.get('position', 'before_norm')}{nest}"
        )
    if d.get("rank") is None:
        lines.append("rank: full")
    else:
        p = d.get("projection") or {}
        lines.append(
            f"rank: {d['rank']} ({p.get('basis', 'svd')} basis, "
            f"refresh every {p.get('refresh', 200)} steps)"
        )
    lines.append(f"state bits: {d.get('state_bits', 32)}")
    lines.append(f"embeddings/head/vectors: {d.get('other', 'adamw')}")
    return lines


def _stage_words(spec: dict[str, Any]) -> str:
    kind = str(spec.get("type", "?"))
    if kind == "lowrank":
        inner = " -> ".join(_stage_words(s) for s in spec.get("inner") or []) or "identity"
        return (
            f"lowrank(rank {spec.get('rank')}, {spec.get('basis')}, "
            f"refresh {spec.get('refresh')}: {inner})"
        )
    bits = spec.get("state_bits", 32)
    return f"{kind} [{bits}-bit state]" if bits not in (None, 32) else kind


def _pipeline(routes: list[dict[str, Any]]) -> list[str]:
    lines = []
    for route in routes:
        who = ", ".join([*route.get("labels", []), *route.get("names", [])]) or "all other"
        stages = (
            " -> ".join(_stage_words(s) for s in route.get("stages") or []) or "plain gradient"
        )
        mult = route.get("lr_mult", 1.0)
        extra = f" (lr x{_g(mult)})" if mult != 1.0 else ""
        extra = f" (lr {_g(route['lr'])}, fixed)" if route.get("lr") is not None else extra
        lines.append(f"{who}: {stages}{extra}")
    return lines


def _g(v: Any) -> str:
    return f"{v:g}" if isinstance(v, int | float) and not isinstance(v, bool) else str(v)


def _short(v: Any, limit: int = 160) -> str:
    text = str(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"
