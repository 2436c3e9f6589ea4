"""Optimizer-state accounting: analytical (before any run) and measured (from state tensors).

Convention: bytes of every tensor in ``optimizer.state`` except the scalar ``step`` counters
(``numel * element_size``); the analytical count sums each stage's ``state_bytes`` for the
parameter's shape, so both agree exactly (tested for every preset).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from optim_core.compile import build_stages, resolve_route
from optim_core.recipe import Recipe


def state_bytes(
    recipe: Recipe,
    named_shapes: Mapping[str, Sequence[int]],
    dtype: torch.dtype = torch.float32,
) -> int:
    """Bytes of optimizer state ``build(recipe, params)`` will hold once every param stepped.

    Args:
        recipe: the recipe (design or pipeline form).
        named_shapes: parameter name -> shape (as ``model.named_parameters()``).
        dtype: parameter dtype (state stored in the parameter dtype, e.g. GaLore's P, follows it).

    Returns:
        Total bytes, excluding the scalar ``step`` counters.

    Raises:
        ValueError: a parameter matches no route, or a stage cannot handle its shape (e.g. a
            rank larger than the matrix), naming the parameter.
    """
    pipeline = recipe.to_pipeline()
    total = 0
    for name, shape in named_shapes.items():
        shp = tuple(int(s) for s in shape)
        route = pipeline.routes[resolve_route(pipeline, name, shp)]
        total += sum(st.state_bytes(shp, dtype) for st in build_stages(route.stages, name, shp))
    return total


def measure_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of all tensors in ``optimizer.state`` except ``step`` counters (any optimizer)."""
    total = 0
    for state in optimizer.state.values():
        for key, value in state.items():
            if key != "step" and isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total
