"""Optimizer-state accounting: analytical (before any run) and measured (from state tensors).

Convention: bytes of every tensor in ``optimizer.state`` except the scalar ``step`` counters
(``numel * element_size``); the analytical count sums each stage's ``state_bytes`` for the
parameter's shape, so both agree exactly (tested for every preset).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from optim_core.base import tensor_bytes
from optim_core.compile import build_stages, route_members
from optim_core.recipe import Recipe


def state_bytes(
    recipe: Recipe,
    named_shapes: Mapping[str, Sequence[int]],
    dtype: torch.dtype = torch.float32,
    model_facts: Mapping[str, Any] | None = None,
) -> int:
    """Bytes of optimizer state ``build(recipe, params)`` will hold once every param stepped.

    Args:
        recipe: the recipe (design or pipeline form).
        named_shapes: parameter name -> shape (as ``model.named_parameters()``).
        dtype: parameter dtype (state stored in the parameter dtype, e.g. GaLore's P, follows it).
        model_facts: as for :func:`optim_core.build` (Adam-mini's ``n_heads``/``n_kv_heads``).

    Returns:
        Total bytes, excluding the scalar ``step`` counters.

    Raises:
        ValueError: a parameter matches no route, or a stage cannot handle its shape (e.g. a
            rank larger than the matrix), naming the parameter.
    """
    return sum(
        st.state_bytes(shp, dtype)
        for _, shp, stages in param_stages(recipe, named_shapes, model_facts)
        for st in stages
    )


def param_stages(
    recipe: Recipe,
    named_shapes: Mapping[str, Sequence[int]],
    model_facts: Mapping[str, Any] | None,
) -> Iterator[tuple[str, tuple[int, ...], list[Any]]]:
    """``(name, shape, stages)`` of every parameter (grouped by route, model order within a
    route), the stages built as ``build`` builds them."""
    pipeline = recipe.to_pipeline()
    shapes = {name: tuple(int(s) for s in shape) for name, shape in named_shapes.items()}
    for idx, names in route_members(pipeline, list(shapes.items())).items():
        route = pipeline.routes[idx]
        for pos, name in enumerate(names):
            shp = shapes[name]
            yield name, shp, build_stages(route.stages, name, shp, model_facts, (pos, len(names)))


def weight_bytes(
    recipe: Recipe,
    named_shapes: Mapping[str, Sequence[int]],
    dtype: torch.dtype = torch.float32,
    model_facts: Mapping[str, Any] | None = None,
) -> int:
    """Bytes of the weights as the recipe stores them: ``numel·itemsize`` of ``dtype``, or a
    stage's ``weight_bytes`` (Q-GaLore's INT8 weights: 1 byte per element + fp32 scale and
    zero per group of 256)."""
    total = 0
    for _, shp, stages in param_stages(recipe, named_shapes, model_facts):
        own = [st.weight_bytes(shp, dtype) for st in stages if hasattr(st, "weight_bytes")]
        total += own[-1] if own else tensor_bytes(shp, dtype)
    return total


def measure_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of all tensors in ``optimizer.state`` except ``step`` counters (any optimizer)."""
    total = 0
    for state in optimizer.state.values():
        for key, value in state.items():
            if key != "step" and isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total
