"""A benchmark arm's tunable hyperparameters, and a trial's params applied to its recipe.

Every arm gets the same kinds of knobs (Wen et al. 2025: tune every optimizer, not only the new
one): the lr always (a log range around the recipe's own lr), decoupled weight decay, the warmup
fraction of the schedule, β2 of every Adam-type stage (Adam, Adam-mini) and β of every momentum
EMA (not Lion's interpolation). An arm may declare its own ranges (:class:`HParamSpace`); an axis
it sets to a single value is fixed. Secondary lrs (absolute route lrs) are never touched: only
``run.lr`` moves, which rescales the routes whose lr is relative to the main one.

No torch at import: the pipeline form is computed through ``records.recipes``.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from search.space import FloatRange

#: Default ranges (the same for every arm; ``lr`` is relative to the arm's own lr).
LR_FACTOR = 4.0
DEFAULT_WEIGHT_DECAY = [0.0, 0.1]
DEFAULT_WARMUP = [0.05, 0.1, 0.2]
DEFAULT_BETA2 = [0.95, 0.99, 0.999]
DEFAULT_BETA = FloatRange(low=0.8, high=0.98)
ADAM_TYPES = ("adam", "adam_mini")

Axis = FloatRange | list[float]


class HParamSpace(BaseModel):
    """What an arm tunes; None = the default for that axis (see module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lr: Axis | None = Field(None, description="lr range (default: [lr/4, lr*4], log)")
    weight_decay: Axis | None = Field(None, description="default [0, 0.1]")
    warmup_frac: Axis | None = Field(None, description="default [0.05, 0.1, 0.2]")
    beta2: Axis | None = Field(None, description="Adam-type stages; default [0.95, 0.99, 0.999]")
    beta: Axis | None = Field(None, description="momentum EMAs; default [0.8, 0.98]")


def _stages(pipeline: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stage of a pipeline dict, low-rank inner stages included (depth first)."""
    out: list[dict[str, Any]] = []
    todo = [s for route in pipeline.get("routes", []) for s in route.get("stages", [])]
    while todo:
        stage = todo.pop(0)
        out.append(stage)
        todo = list(stage.get("inner") or []) + todo
    return out


def _is_momentum(stage: dict[str, Any]) -> bool:
    return stage.get("type") == "ema" and stage.get("output") != "interp"


def tunable_axes(recipe: dict[str, Any], space: HParamSpace | None = None) -> dict[str, Axis]:
    """The axes Optuna samples for ``recipe`` (pipeline-form dict with ``lr``)."""
    space = space or HParamSpace()
    lr = float(recipe["lr"])
    stages = _stages(recipe["pipeline"])
    axes: dict[str, Axis | None] = {
        "lr": space.lr or FloatRange(low=lr / LR_FACTOR, high=lr * LR_FACTOR, log=True),
        "weight_decay": space.weight_decay or list(DEFAULT_WEIGHT_DECAY),
        "warmup_frac": space.warmup_frac or list(DEFAULT_WARMUP),
    }
    if any(s.get("type") in ADAM_TYPES for s in stages):
        axes["beta2"] = space.beta2 or list(DEFAULT_BETA2)
    if any(_is_momentum(s) for s in stages):
        axes["beta"] = space.beta or DEFAULT_BETA
    return {k: v for k, v in axes.items() if v is not None}


def apply_params(recipe: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of the pipeline-form ``recipe`` with a trial's weight decay / β2 / β set.

    ``lr`` and ``warmup_frac`` are run settings (``run.lr``, ``run.warmup_frac``), not recipe
    fields, so the recipe rows of one arm differ only by what changes the optimizer's state.
    """
    out = copy.deepcopy(recipe)
    if "weight_decay" in params:
        out["weight_decay"] = float(params["weight_decay"])
    for stage in _stages(out["pipeline"]):
        if "beta2" in params and stage.get("type") in ADAM_TYPES:
            stage["beta2"] = float(params["beta2"])
        if "beta" in params and _is_momentum(stage):
            stage["beta"] = float(params["beta"])
    return out


def pipeline_form(canonical: dict[str, Any]) -> dict[str, Any]:
    """The recipe in pipeline form (a design recipe compiled), as a JSON dict, name dropped."""
    from records.recipes import recipe_model

    recipe = recipe_model(canonical)
    return {
        "schema": 1,
        "lr": recipe.lr,
        "weight_decay": recipe.weight_decay,
        "pipeline": recipe.to_pipeline().model_dump(mode="json"),
    }
