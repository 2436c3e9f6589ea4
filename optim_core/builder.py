"""``build(recipe, params)``: the torch optimizer a recipe compiles to (re-exported as
``optim_core.build``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optim_core.optimizer import RecipeOptimizer
from optim_core.param_groups import build_grouped
from optim_core.recipe import Recipe


def build(
    recipe: Recipe | dict[str, Any],
    model_or_named_params: Any,
    lr: float | None = None,
    *,
    foreach: bool | None = None,
    model_facts: Mapping[str, Any] | None = None,
) -> RecipeOptimizer:
    """A torch optimizer for ``recipe`` over a module / named params / dict / tensors.

    Args:
        recipe: a Recipe, or a dict validated as one.
        model_or_named_params: ``nn.Module``, ``{name: param}``, ``[(name, param)]``, tensors,
            or torch-style param groups ``[{"params": [...], "lr"?, "weight_decay"?}]`` whose
            lr / weight_decay override the recipe route's for their parameters.
        lr: base lr overriding ``recipe.lr`` (each relative route's group lr is
            ``lr × lr_mult``; routes with an absolute ``lr`` keep theirs).
        foreach: ``False`` forces the per-parameter path; ``None``/``True`` batch fp32 Adam
            routes with ``torch._foreach_*`` kernels (same math and state keys).
        model_facts: facts about the model some stages need (``n_heads``, ``n_kv_heads`` for
            Adam-mini's per-head blocks), e.g. a workload's model config; ``None`` reads
            ``n_heads``/``n_kv_heads`` attributes of the module's submodules.

    Raises:
        ValueError: a parameter matches no route or a stage cannot handle it (names it).
        pydantic.ValidationError: ``recipe`` is an invalid dict.
    """
    if not isinstance(recipe, Recipe):
        recipe = Recipe.model_validate(recipe)
    return build_grouped(  # torch-style param groups: per-group lr / weight_decay overrides
        lambda params: RecipeOptimizer(
            recipe, params, lr=lr, foreach=foreach, model_facts=model_facts
        ),
        model_or_named_params,
    )
