"""Published optimizers as recipes: ``names()``, ``get(name, **overrides)``.

Every preset is a short function returning a :class:`Recipe` (pipeline form), with the paper
reference and its defaults (docs/references.md) as keyword arguments; ``get`` passes
overrides to it (unknown preset or keyword -> ``ValueError`` listing the valid ones).
Routing labels: ``matrix`` (hidden 2-D weights), ``embedding``, ``head``, ``vector``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from optim_core.lowrank_presets import PRESETS as _LOWRANK_PRESETS
from optim_core.recipe import (
    AdafactorSpec,
    AdamMiniSpec,
    AdamSpec,
    CosmosSpec,
    EmaSpec,
    NewtonSchulzSpec,
    NormSpec,
    Pipeline,
    Recipe,
    Route,
    ShapeScaleSpec,
    SinkhornSpec,
    StageSpec,
    WhitenSpec,
)

ALL = ["matrix", "embedding", "head", "vector"]
OTHERS = ["embedding", "head", "vector"]


def _route(labels: list[str], stages: list[StageSpec], **kw: Any) -> Route:
    return Route(labels=labels, stages=stages, **kw)  # type: ignore[arg-type]


def _recipe(name: str, lr: float, weight_decay: float, routes: list[Route]) -> Recipe:
    return Recipe(name=name, lr=lr, weight_decay=weight_decay, pipeline=Pipeline(routes=routes))


def adamw(
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> Recipe:
    """AdamW (Loshchilov & Hutter, 2019; torch.optim.AdamW), every parameter. docs/references.md#adamw."""
    adam = AdamSpec(beta1=beta1, beta2=beta2, eps=eps)
    return _recipe("adamw", lr, weight_decay, [_route(ALL, [adam])])


def sgd(
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
) -> Recipe:
    """SGD with heavy-ball momentum and coupled L2 decay (torch.optim.SGD). docs/references.md#sgd."""
    stages: list[StageSpec] = []
    if momentum > 0:
        out = "nesterov_add" if nesterov else "state"
        ema = EmaSpec(
            beta=momentum, form="heavy_ball", dampening=dampening, init="first", output=out
        )
        stages = [ema]
    return _recipe("sgd", lr, weight_decay, [_route(ALL, stages, wd_mode="coupled")])


def signum(lr: float = 1e-3, weight_decay: float = 0.0, beta: float = 0.9) -> Recipe:
    """Signum (Bernstein et al., 2018): sign of an EMA of gradients; ``beta=0`` is signSGD. docs/references.md#signum."""
    stages: list[StageSpec] = [NormSpec(type="sign")]
    if beta > 0:
        stages = [EmaSpec(beta=beta), *stages]
    return _recipe("signum", lr, weight_decay, [_route(ALL, stages)])


def lion(
    lr: float = 1e-4, weight_decay: float = 0.0, beta1: float = 0.9, beta2: float = 0.99
) -> Recipe:
    """Lion (Chen et al., 2023; lion-pytorch): sign(β1·m + (1−β1)·g), m ← EMA_β2. docs/references.md#lion."""
    ema = EmaSpec(beta=beta2, form="mul_add", output="interp", interp_beta=beta1)
    return _recipe("lion", lr, weight_decay, [_route(ALL, [ema, NormSpec(type="sign")])])


def muon(
    lr: float = 0.02,
    weight_decay: float = 0.0,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    adam_lr: float = 3e-4,
) -> Recipe:
    """Muon (Jordan et al., 2024; torch.optim.Muon order of ops) on hidden matrices; AdamW
    (0.9, 0.95, ε 1e-10, lr ``adam_lr``) on embeddings, head and vectors. docs/references.md#muon."""
    out = "nesterov_lerp" if nesterov else "state"
    matrix: list[StageSpec] = [
        EmaSpec(beta=momentum, output=out),
        NewtonSchulzSpec(steps=ns_steps),
        ShapeScaleSpec(),
    ]
    aux = AdamSpec(beta1=0.9, beta2=0.95, eps=1e-10)
    routes = [_route(["matrix"], matrix), _route(OTHERS, [aux], lr=adam_lr)]
    return _recipe("muon", lr, weight_decay, routes)


def swan(
    lr: float = 0.02,
    weight_decay: float = 0.0,
    alpha: float = 1.0,
    method: str = "eigh",
    steps: int | None = None,
    beta: float | None = None,
    rescale: bool = False,
) -> Recipe:
    """SWAN (Ma et al., arXiv 2412.13148, ICML 2025) on hidden matrices, stateless: GradNorm
    (standardize along the larger side) then GradWhitening ``(G̃G̃ᵀ)^{-1/2}G̃`` computed exactly
    (``method="eigh"``); Adam elsewhere at the same lr. docs/references.md#swan.

    Paper defaults: both operators as defined in the paper, no rescale, no lr factor. The
    paper's lr is not in the stored material: 0.02 gives the matrices Muon's step for an update
    of the same spectral norm (1). Third-party variants as options: ``rescale=True`` (RMS 1),
    ``alpha=0.05`` (matrix lr factor), ``method="ns"`` (coupled Newton–Schulz, 10 steps, β 0.5
    unless ``steps``/``beta``) and ``method="nsds"`` (diagonal substitution, 2 steps, β 0.4).
    """
    defaults = {"eigh": (10, 0.5), "ns": (10, 0.5), "nsds": (2, 0.4)}
    if method not in defaults:
        raise ValueError(f"swan: method must be one of {sorted(defaults)}, got {method!r}")
    whiten = WhitenSpec(
        method=method,  # type: ignore[arg-type]
        steps=defaults[method][0] if steps is None else steps,
        beta=defaults[method][1] if beta is None else beta,
        rescale=rescale,
    )
    matrix: list[StageSpec] = [NormSpec(type="standardize", axis="larger"), whiten]
    routes = [_route(["matrix"], matrix, lr_mult=alpha), _route(OTHERS, [AdamSpec()])]
    return _recipe("swan", lr, weight_decay, routes)


def sinkgd(
    lr: float = 0.02, weight_decay: float = 0.0, alpha: float = 0.05, iters: int = 5
) -> Recipe:
    """SinkGD (Scetbon et al., 2025): stateless SR-Sinkhorn on hidden matrices, Adam elsewhere;
    matrix lr = ``alpha``·lr (third-party reproductions, unverified). docs/references.md#sinkgd."""
    routes = [
        _route(["matrix"], [SinkhornSpec(iters=iters)], lr_mult=alpha),
        _route(OTHERS, [AdamSpec()]),
    ]
    return _recipe("sinkgd", lr, weight_decay, routes)


def scale(
    lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.9, adam_lr: float = 0.02
) -> Recipe:
    """SCALE (Glentis et al., 2025): row-RMS normalization of hidden matrices (no momentum),
    column normalization of embeddings, EMA + row normalization on the head, HF Adam with
    lr ``adam_lr`` on vectors (the ≤350M scripts' argparse default). docs/references.md#scale."""
    routes = [
        _route(["matrix"], [NormSpec(type="row")]),
        _route(["embedding"], [NormSpec(type="col")]),
        _route(["head"], [EmaSpec(beta=momentum), NormSpec(type="row")]),
        _route(["vector"], [AdamSpec(style="hf")], lr=adam_lr),
    ]
    return _recipe("scale", lr, weight_decay, routes)


def adafactor(
    lr: float = 1e-2, weight_decay: float = 0.0, beta2_decay: float = -0.8, eps2: float = 1e-3
) -> Recipe:
    """Adafactor (Shazeer & Stern, 2018; torch.optim.Adafactor), every parameter. docs/references.md#adafactor."""
    stage = AdafactorSpec(beta2_decay=beta2_decay, eps2=eps2)
    return _recipe("adafactor", lr, weight_decay, [_route(ALL, [stage])])


def adam_mini(
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    n_heads: int | None = None,
    n_kv_heads: int | None = None,
) -> Recipe:
    """Adam-mini (Zhang et al., ICLR 2025; adam-mini 1.1.1): one v per head for q (``n_heads``)
    and k (``n_kv_heads``, default ``n_heads``), per row (output unit / token) for other
    matrices, embeddings and head, one scalar per vector; full AdamW on biases; no decay on
    vectors and biases. Heads ``None``: the model's, given to ``build`` as ``model_facts`` (the
    worker passes the workload's). docs/references.md#adam-mini."""
    kw = {"beta1": beta1, "beta2": beta2, "eps": eps}
    q_heads = "model" if n_heads is None else n_heads
    k_heads = q_heads if n_kv_heads is None else n_kv_heads
    q = AdamMiniSpec(block="head", n_heads=q_heads, **kw)
    k = AdamMiniSpec(block="head", n_heads=k_heads, heads="n_kv_heads", **kw)
    routes = [
        Route(names=["*bias*"], stages=[AdamSpec(**kw)], weight_decay=0.0),
        Route(names=["*attn.q.weight"], stages=[q]),
        Route(names=["*attn.k.weight"], stages=[k]),
        _route(["matrix", "embedding", "head"], [AdamMiniSpec(block="row", **kw)]),
        _route(["vector"], [AdamMiniSpec(block="tensor", **kw)], weight_decay=0.0),
    ]
    return _recipe("adam_mini", lr, weight_decay, routes)


def cosmos(
    lr: float = 2e-3,
    weight_decay: float = 0.1,
    beta1: float = 0.95,
    beta2: float = 0.95,
    eps: float = 1e-8,
    rank: int = 64,
    gamma: float = 0.2,
    lr_ratio: float = 0.2,
    nesterov: bool = True,
) -> Recipe:
    """COSMOS (Liu et al., 2025; lliu606/COSMOS README defaults) on every matrix with at most
    10000 rows, embeddings and head included (the update has RMS ``lr_ratio``·lr); the
    reference's Adam branch (0.1 gradient weight, 0.9-based bias correction) on vectors and
    larger matrices. Decay before the step everywhere. docs/references.md#cosmos."""
    matrix = CosmosSpec(
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        rank=rank,
        gamma=gamma,
        ratio=lr_ratio,
        nesterov=nesterov,
    )
    return _recipe("cosmos", lr, weight_decay, [_route(ALL, [matrix])])


PRESETS: dict[str, Callable[..., Recipe]] = {
    "adamw": adamw,
    "sgd": sgd,
    "signum": signum,
    "lion": lion,
    "muon": muon,
    "swan": swan,
    "sinkgd": sinkgd,
    "scale": scale,
    "adafactor": adafactor,
    "adam_mini": adam_mini,
    "cosmos": cosmos,
}

# Low-rank and quantized-state presets (galore, apollo, apollo_mini, frugal, adamw_8bit,
# adamw_4bit, q_galore) live in optim_core/lowrank_presets.py.
# ---------------------------------------------------------------------------------------------
PRESETS.update(_LOWRANK_PRESETS)


def names() -> list[str]:
    """Registered preset names, in registration order."""
    return list(PRESETS)


def get(name: str, **overrides: Any) -> Recipe:
    """The recipe of preset ``name`` with keyword ``overrides`` (e.g. ``lr=0.02``).

    Raises:
        ValueError: unknown preset (lists ``names()``) or unknown override (lists the keywords).
    """
    fn = PRESETS.get(name)
    if fn is None:
        raise ValueError(f"preset: unknown preset {name!r}; valid presets: {names()}")
    valid = list(inspect.signature(fn).parameters)
    bad = sorted(set(overrides) - set(valid))
    if bad:
        raise ValueError(f"preset {name!r}: unknown override(s) {bad}; valid: {valid}")
    return fn(**overrides)
