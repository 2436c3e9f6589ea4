"""optim_core: optimizer recipes as data, compiled to real ``torch.optim.Optimizer`` objects.

```python
import optim_core
recipe = optim_core.presets.get("sinkgd", lr=0.02)
opt = optim_core.build(recipe, model)
optim_core.state_bytes(recipe, {n: p.shape for n, p in model.named_parameters()})
```
See docs/recipes.md (schema, routing, presets) and docs/architecture.md (contract).
"""

from __future__ import annotations

from typing import Any

from optim_core import presets
from optim_core.accounting import measure_state_bytes, state_bytes
from optim_core.describe import describe
from optim_core.optimizer import RecipeOptimizer
from optim_core.recipe import Design, Pipeline, Recipe, Route

__all__ = [
    "Design",
    "Pipeline",
    "Recipe",
    "RecipeOptimizer",
    "Route",
    "build",
    "describe",
    "measure_state_bytes",
    "presets",
    "state_bytes",
]


def build(
    recipe: Recipe | dict[str, Any],
    model_or_named_params: Any,
    lr: float | None = None,
    *,
    foreach: bool | None = None,
) -> RecipeOptimizer:
    """A torch optimizer for ``recipe`` over a module / named params / dict / tensors.

    Args:
        recipe: a Recipe, or a dict validated as one.
        model_or_named_params: ``nn.Module``, ``{name: param}``, ``[(name, param)]`` or tensors.
        lr: base lr overriding ``recipe.lr`` (each route's group lr is ``lr × lr_mult``).
        foreach: ``False`` forces the per-parameter path; ``None``/``True`` batch fp32 Adam
            routes with ``torch._foreach_*`` kernels (same math and state keys).

    Raises:
        ValueError: a parameter matches no route or a stage cannot handle it (names it).
        pydantic.ValidationError: ``recipe`` is an invalid dict.
    """
    if not isinstance(recipe, Recipe):
        recipe = Recipe.model_validate(recipe)
    return RecipeOptimizer(recipe, model_or_named_params, lr=lr, foreach=foreach)
