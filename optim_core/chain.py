"""A chain of stages over one parameter's namespaced state: the stage-list runner shared by
:class:`optim_core.optimizer.RecipeOptimizer` (a route's pipeline) and
:class:`optim_core.lowrank.LowRank` (its inner stages on the projected update).

Stage ``i`` keeps its slots under ``"{i}.{stage.name}.{slot}"`` in the flat state dict, so
``state_dict()`` round-trips and stages never see each other's slots
(docs/architecture.md, "optim_core internals").
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from torch import Tensor

from optim_core.base import Stage

__all__ = ["chain_lr", "init_chain", "run_chain", "stage_slots"]


def _prefix(i: int, stage: Stage) -> str:
    return f"{i}.{stage.name}."


def stage_slots(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The slots under ``prefix`` with the prefix stripped (a new dict; same tensors)."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def init_chain(stages: Sequence[Stage], p: Tensor, index: int | None = None) -> dict[str, Tensor]:
    """Every stage's initial slots for ``p`` under namespaced keys; ``index``: the 1-based index
    of ``p`` among the optimizer's parameters, passed to the stages' optional ``init_at``
    (``None``: plain ``init``)."""
    state: dict[str, Tensor] = {}
    for i, stage in enumerate(stages):
        init_at = getattr(stage, "init_at", None) if index is not None else None
        slots = init_at(p, index) if init_at is not None else stage.init(p)
        for key, t in slots.items():
            state[_prefix(i, stage) + key] = t
    return state


def run_chain(
    stages: Sequence[Stage], u: Tensor, state: MutableMapping[str, Any], p: Tensor, step: int
) -> Tensor:
    """``u`` through the stages in order; each stage's slots are written back to ``state``
    (slots a stage removed, e.g. FRUGAL-Block deactivation, are deleted)."""
    for i, stage in enumerate(stages):
        prefix = _prefix(i, stage)
        sub = stage_slots(state, prefix)
        held = len(sub)
        u = stage.update(u, sub, p, step)
        for key, v in sub.items():
            state[prefix + key] = v
        if len(sub) < held:
            for key in [k for k in state if k.startswith(prefix) and k[len(prefix) :] not in sub]:
                del state[key]
    return u


def chain_lr(
    stages: Sequence[Stage], lr: float, p: Tensor, state: Mapping[str, Any], step: int
) -> float:
    """``lr`` through the stages' optional ``scale_lr`` hooks, in order (after :func:`run_chain`
    of the same step: the hooks read the updated slots)."""
    for i, stage in enumerate(stages):
        scale_lr = getattr(stage, "scale_lr", None)
        if scale_lr is not None:
            lr = scale_lr(lr, p, stage_slots(state, _prefix(i, stage)), step)
    return lr
