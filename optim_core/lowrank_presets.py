"""Low-rank and quantized-state presets: GaLore, APOLLO, APOLLO-Mini, FRUGAL, 8/4-bit AdamW,
Q-GaLore (optimizer side). Merged into :data:`optim_core.presets.PRESETS`.

Routing as in the GaLore/APOLLO/FRUGAL scripts (docs/references.md#galore-protocol): hidden matrices
(``matrix`` label: attn/mlp weights) are projected; embeddings, head and vectors get the plain
Adam of the same optimizer at the same lr, without the projection scale.

Ranks default to the *fraction* 0.25 of min(m, n), which is GaLore's 60M/350M/1B rank
(128/256/512 of d = 512/1024/2048) and APOLLO's 60M/130M/350M rank, and stays valid on the
small workloads; pass an int for a fixed rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from optim_core.recipe import (
    AdamSpec,
    FrugalBlockSpec,
    LowRankSpec,
    Pipeline,
    Recipe,
    Route,
    WeightQuantSpec,
)

__all__ = ["PRESETS"]

OTHERS = ["embedding", "head", "vector"]


def _lowrank_recipe(
    name: str,
    lr: float,
    weight_decay: float,
    lowrank: LowRankSpec | FrugalBlockSpec,
    other: AdamSpec,
    wd_mode: str,
) -> Recipe:
    routes = [
        Route(labels=["matrix"], stages=[lowrank], wd_mode=wd_mode),  # type: ignore[arg-type]
        Route(labels=OTHERS, stages=[other], wd_mode=wd_mode),  # type: ignore[arg-type]
    ]
    return Recipe(name=name, lr=lr, weight_decay=weight_decay, pipeline=Pipeline(routes=routes))


def galore(
    lr: float = 0.01,
    weight_decay: float = 0.0,
    rank: int | float = 0.25,
    refresh: int = 200,
    scale: float = 0.25,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-6,
) -> Recipe:
    """GaLore (Zhao et al., ICML 2024; galore-torch GaLoreAdamW): top-r SVD projector of the
    raw gradient refreshed every T steps, HF-style Adam on the projection, back-projection × α,
    decoupled decay after the step. LLaMA defaults lr 0.01, α 0.25, T 200. docs/references.md#galore."""
    adam = AdamSpec(beta1=beta1, beta2=beta2, eps=eps, style="hf")
    lowrank = LowRankSpec(rank=rank, inner=[adam], basis="svd", refresh=refresh, scale=scale)
    return _lowrank_recipe("galore", lr, weight_decay, lowrank, adam, "decoupled_after")


def apollo(
    lr: float = 0.01,
    weight_decay: float = 0.0,
    rank: int | float = 0.25,
    refresh: int = 200,
    alpha: float = 1.0,
    granularity: str = "channel",
    scale_front: bool = False,
    limiter: bool = True,
    eps: float = 1e-6,
) -> Recipe:
    """APOLLO (Zhu et al., MLSys 2025; apollo-torch APOLLOAdamW): seeded Gaussian projector,
    HF Adam on the projection only to measure channel-wise norm ratios ‖N‖/‖R‖ that scale the
    raw gradient, × sqrt(α), Fira norm-growth limiter, decay after the step. docs/references.md#apollo."""
    adam = AdamSpec(eps=eps, style="hf")
    lowrank = LowRankSpec(
        rank=rank,
        inner=[adam],
        basis="gaussian",
        refresh=refresh,
        scale=math.sqrt(alpha),
        output=granularity,  # type: ignore[arg-type]
        limiter=limiter,
        scale_front=scale_front,
    )
    return _lowrank_recipe("apollo", lr, weight_decay, lowrank, adam, "decoupled_after")


def apollo_mini(
    lr: float = 0.01,
    weight_decay: float = 0.0,
    rank: int | float = 1,
    refresh: int = 200,
    alpha: float = 128.0,
    scale_front: bool = True,
    eps: float = 1e-6,
) -> Recipe:
    """APOLLO-Mini (Zhu et al., MLSys 2025): rank-1 Gaussian projection, one tensor-wise norm
    ratio, α = 128 (× sqrt(α) = 11.31), ``scale_front`` as the 60M/130M scripts. docs/references.md#apollo."""
    recipe = apollo(
        lr, weight_decay, rank, refresh, alpha, "tensor", scale_front, limiter=True, eps=eps
    )
    return recipe.model_copy(update={"name": "apollo_mini"})


def frugal(
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    variant: str = "block",
    density: float = 0.25,
    refresh: int = 200,
    order: str = "descending",
    rank: int | float | None = None,
    basis: str = "svd",
    inactive_scale: float = 1.0,
    eps: float = 1e-8,
) -> Recipe:
    """FRUGAL (Zmushko et al., ICML 2025): state-full torch-style Adam on part of each step,
    state-free signSGD on the rest, decoupled decay before the step; AdamW elsewhere. docs/references.md#frugal.

    ``variant="block"`` (the paper's default and headline): ``round(density·#matrices)`` whole
    hidden matrices active (full Adam state), the others signSGD; the active set moves every
    ``refresh`` steps in ``order`` (descending in the 130M script) and statistics reset.
    ``variant="galore"``: Adam on a rank ``rank`` (default ``density``) projection, state and
    step reset at each refresh, signSGD on the residual G − P(G)."""
    adam = AdamSpec(eps=eps, style="torch")
    if variant == "block":
        if rank is not None:
            raise ValueError("frugal: 'rank' applies to variant 'galore'; use 'density'")
        kw = {"density": density, "refresh": refresh, "order": order, "eps": eps}
        block = FrugalBlockSpec(inactive_scale=inactive_scale, **kw)  # type: ignore[arg-type]
        return _lowrank_recipe("frugal", lr, weight_decay, block, adam, "decoupled_before")
    if variant != "galore":
        raise ValueError(f"frugal: variant must be 'block' or 'galore', got {variant!r}")
    lowrank = LowRankSpec(
        rank=density if rank is None else rank,
        inner=[adam],
        basis=basis,  # type: ignore[arg-type]
        refresh=refresh,
        complement="sign",
        complement_scale=inactive_scale,
        reset_on_refresh=True,
    )
    return _lowrank_recipe("frugal", lr, weight_decay, lowrank, adam, "decoupled_before")


def adamw_8bit(
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    block: int = 256,
) -> Recipe:
    """8-bit AdamW (Dettmers et al., ICLR 2022; torchao / bitsandbytes AdamW8bit): m and v in
    block-wise dynamic 8-bit (signed / unsigned map, block 256), fp32 state below 4096
    elements, a partial last block quantized (bitsandbytes), decoupled decay before the step.
    docs/references.md#bnb-8bit, #torchao-low-bit."""
    adam = AdamSpec(beta1=beta1, beta2=beta2, eps=eps, state_bits=8, block=block)
    routes = [Route(labels=["matrix", *OTHERS], stages=[adam])]  # type: ignore[list-item]
    return Recipe(
        name="adamw_8bit", lr=lr, weight_decay=weight_decay, pipeline=Pipeline(routes=routes)
    )


def adamw_4bit(
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    block: int = 128,
) -> Recipe:
    """4-bit AdamW (Li et al., NeurIPS 2023; torchao AdamW4bit): m in the 4-bit dynamic map,
    v in the linear unsigned map, block 128, two codes per byte; fp32 state below 4096 elements
    or when the size is not a block multiple (torchao). docs/references.md#torchao-low-bit."""
    adam = AdamSpec(beta1=beta1, beta2=beta2, eps=eps, state_bits=4, block=block)
    routes = [Route(labels=["matrix", *OTHERS], stages=[adam])]  # type: ignore[list-item]
    return Recipe(
        name="adamw_4bit", lr=lr, weight_decay=weight_decay, pipeline=Pipeline(routes=routes)
    )


def q_galore(
    lr: float = 0.015,
    weight_decay: float = 0.0,
    rank: int | float = 0.25,
    refresh: int = 200,
    scale: float = 0.25,
    beta1: float = 0.9,
    beta2: float = 0.95,
    eps: float = 1e-8,
    adaptive_refresh: bool = True,
    weight_bits: int | None = 8,
    stochastic_round: bool = True,
) -> Recipe:
    """Q-GaLore (Zhang et al., 2024): GaLore with an INT4 projector (min-max, group 256), the
    lazy layer-adaptive refresh (T doubles per matrix once the mean cosine of the last 5
    successive first vectors of the float projector is >= 0.4), 8-bit block-wise Adam (torch ε,
    β2 0.95) everywhere, decay after the step, and INT8 hidden weights (group 256, stochastic
    rounding) in the reference's simulation mode (``weight_bits=None``: float weights). docs/references.md#q-galore."""
    adam = AdamSpec(beta1=beta1, beta2=beta2, eps=eps, style="torch", state_bits=8, block=256)
    lowrank = LowRankSpec(
        rank=rank,
        inner=[adam],
        refresh=refresh,
        scale=scale,
        projector_bits=4,
        projector_group=256,
        adaptive_refresh=adaptive_refresh,
    )
    recipe = _lowrank_recipe("q_galore", lr, weight_decay, lowrank, adam, "decoupled_after")
    if weight_bits is None:
        return recipe
    quant = WeightQuantSpec(bits=weight_bits, group=256, stochastic=stochastic_round)  # type: ignore[arg-type]
    routes = recipe.to_pipeline().routes
    matrix = routes[0].model_copy(update={"stages": [lowrank, quant]})
    return recipe.model_copy(update={"pipeline": Pipeline(routes=[matrix, *routes[1:]])})


PRESETS: dict[str, Callable[..., Recipe]] = {
    "galore": galore,
    "apollo": apollo,
    "apollo_mini": apollo_mini,
    "frugal": frugal,
    "adamw_8bit": adamw_8bit,
    "adamw_4bit": adamw_4bit,
    "q_galore": q_galore,
}
