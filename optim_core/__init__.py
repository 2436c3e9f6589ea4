"""optim_core: optimizer recipes as data, compiled to real ``torch.optim.Optimizer`` objects.

```python
import optim_core
recipe = optim_core.presets.get("sinkgd", lr=0.02)
opt = optim_core.build(recipe, model)
optim_core.state_bytes(recipe, {n: p.shape for n, p in model.named_parameters()})
```
See docs/recipes.md (schema, routing, presets) and docs/architecture.md (contract).

Importing the package (and its data modules ``recipe``, ``forms``, ``stage_specs``, ``designs``,
``presets``, ``describe``) does not import torch: the torch-needing names below are loaded on
first use (PEP 562 module ``__getattr__``), so a torch-free process (the API) can validate and
describe recipes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from optim_core import presets
from optim_core.describe import describe
from optim_core.recipe import Design, Pipeline, Recipe, Route

if TYPE_CHECKING:
    from optim_core.accounting import measure_state_bytes, state_bytes, weight_bytes
    from optim_core.builder import build
    from optim_core.dist_accounting import sharded_state_bytes
    from optim_core.optimizer import RecipeOptimizer

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
    "sharded_state_bytes",
    "state_bytes",
    "weight_bytes",
]

# name -> module defining it; these import torch, so they load on first attribute access
_TORCH_NAMES = {
    "build": "optim_core.builder",
    "RecipeOptimizer": "optim_core.optimizer",
    "measure_state_bytes": "optim_core.accounting",
    "state_bytes": "optim_core.accounting",
    "sharded_state_bytes": "optim_core.dist_accounting",  # per rank under FSDP2
    "weight_bytes": "optim_core.accounting",
}


def __getattr__(name: str) -> Any:
    module = _TORCH_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'optim_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
