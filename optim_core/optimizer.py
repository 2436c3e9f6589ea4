"""``RecipeOptimizer``: a torch optimizer running one stage pipeline per parameter route.

One param group per route (``route`` index, ``route_name``, ``lr`` = ``initial_lr`` = base
lr × route ``lr_mult``, or the route's absolute ``lr`` (then ``lr_mult`` is None),
``lr_mult``, ``weight_decay``, ``wd_mode``) so torch lr schedulers
work on ``group["lr"]``. State of parameter ``p``: ``{"step": fp32 CPU scalar, "{i}.{stage}.{slot}":
tensor, ...}`` (docs/architecture.md, "optim_core internals"); ``state_dict`` round-trips,
and loading keeps the stored dtypes (fp32 / quantized state of bf16 parameters stays as saved).

Per step and parameter: ``u = fp32(grad)`` (``+ λ·W`` for coupled decay) → stages →
decoupled decay ``W ← W·(1 − η·λ)`` (before or after) → ``W ← W − η_eff·u``, where ``η_eff``
is the group lr passed through the stages' optional ``scale_lr`` hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn

from optim_core.base import Stage
from optim_core.chain import chain_lr, init_chain, run_chain
from optim_core.compile import build_stages, resolve_route
from optim_core.distributed import has_dtensor, step_dtensors
from optim_core.grouped import adam_group_step, eligible, grouped_adam
from optim_core.param_groups import refuse_late_group
from optim_core.recipe import Recipe

NamedParams = nn.Module | Iterable[tuple[str, Tensor]] | dict[str, Tensor] | Iterable[Tensor]


def named_params(model_or_params: Any) -> list[tuple[str, Tensor]]:
    """(name, param) pairs from a module, a dict, named pairs or bare tensors (``param_<i>``)."""
    if isinstance(model_or_params, nn.Module):
        items = list(model_or_params.named_parameters())
    elif isinstance(model_or_params, dict):
        items = list(model_or_params.items())
    else:
        items = [
            x if isinstance(x, tuple) else (f"param_{i}", x) for i, x in enumerate(model_or_params)
        ]
    return [(n, p) for n, p in items if p.requires_grad]


FACT_KEYS = ("n_heads", "n_kv_heads")


def module_facts(model: Any) -> dict[str, int]:
    """Model facts some stages need, read from a module's submodules (the first int attribute
    ``n_heads`` / ``n_kv_heads`` found, as our LLaMA's attention has); {} for non-modules."""
    facts: dict[str, int] = {}
    if isinstance(model, nn.Module):
        for module in model.modules():
            for key in FACT_KEYS:
                value = getattr(module, key, None)
                if key not in facts and isinstance(value, int) and not isinstance(value, bool):
                    facts[key] = value
    return facts


def _route_name(route: Any, index: int) -> str:
    return "+".join([*route.labels, *route.names]) or f"route{index}"


class RecipeOptimizer(torch.optim.Optimizer):
    """The optimizer a :class:`Recipe` compiles to (build it with :func:`optim_core.build`)."""

    def __init__(
        self,
        recipe: Recipe,
        model_or_params: Any,
        lr: float | None = None,
        *,
        foreach: bool | None = None,
        model_facts: Mapping[str, Any] | None = None,
    ) -> None:
        pipeline = recipe.to_pipeline()
        base_lr = recipe.lr if lr is None else float(lr)
        facts = module_facts(model_or_params) if model_facts is None else model_facts
        named = named_params(model_or_params)
        if not named:
            raise ValueError("build: no trainable parameters given")
        members: dict[int, list[tuple[str, Tensor]]] = {}
        for name, p in named:
            members.setdefault(resolve_route(pipeline, name, tuple(p.shape)), []).append((name, p))
        self._stages: dict[Tensor, list[Stage]] = {}
        self._index: dict[Tensor, int] = {p: i + 1 for i, (_, p) in enumerate(named)}
        self._names: dict[Tensor, str] = {p: n for n, p in named}
        groups = [
            self._route_group(recipe, idx, members[idx], base_lr, facts) for idx in sorted(members)
        ]
        self.recipe = recipe
        self.foreach = foreach is not False  # None: multi-tensor path where it applies
        super().__init__(groups, {"lr": base_lr})

    def _route_group(
        self,
        recipe: Recipe,
        idx: int,
        members: list[tuple[str, Tensor]],
        base_lr: float,
        facts: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Build the stages of route ``idx``'s parameters; return its param group."""
        route = recipe.to_pipeline().routes[idx]
        for pos, (name, p) in enumerate(members):
            place = (pos, len(members))
            self._stages[p] = build_stages(route.stages, name, tuple(p.shape), facts, place)
        wd = recipe.weight_decay if route.weight_decay is None else route.weight_decay
        return {
            "params": [p for _, p in members],
            "lr": route.group_lr(base_lr),
            "initial_lr": route.group_lr(base_lr),  # what lr schedulers scale
            "lr_mult": route.lr_mult if route.lr is None else None,  # None: absolute
            "weight_decay": wd,
            "wd_mode": route.wd_mode,
            "route": idx,
            "route_name": _route_name(route, idx),
        }

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Only the constructor adds groups; later ones are refused (they have no pipeline)."""
        refuse_late_group(self, param_group)
        super().add_param_group(param_group)

    def stages_of(self, p: Tensor) -> list[Stage]:
        """The compiled stages of parameter ``p``."""
        return self._stages[p]

    def _init_state(self, p: Tensor, w: Tensor) -> dict[str, Any]:
        state: dict[str, Any] = {"step": torch.tensor(0.0, dtype=torch.float32)}
        state.update(init_chain(self._stages[p], w, self._index[p]))
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One optimization step over all parameters with a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if has_dtensor(params):  # FSDP2: shards stepped locally or whole (distributed.py)
                step_dtensors(self, params, group)
            else:
                self._step_group(params, group, [(p, p.grad) for p in params])
        return loss

    def _step_group(
        self, params: list[Tensor], group: dict[str, Any], views: list[tuple[Tensor, Any]]
    ) -> None:
        """Step ``params`` of ``group`` on ``views``: their (weight, grad) tensors (the
        parameters themselves, or DTensor local shards); batched for an fp32/low-bit Adam."""
        adam = grouped_adam(self._stages[params[0]]) if params and self.foreach else None
        if adam is not None and eligible(params, group["wd_mode"]):
            states = [self._state_for(p, w) for p, (w, _) in zip(params, views, strict=True)]
            weights, grads = [w for w, _ in views], [g for _, g in views]
            adam_group_step(adam, weights, states, group, grads)
            return
        for p, view in zip(params, views, strict=True):
            self._step_param(p, group, view)

    def _state_for(self, p: Tensor, w: Tensor | None = None) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state.update(self._init_state(p, p if w is None else w))
        return state

    def _step_param(
        self, p: Tensor, group: dict[str, Any], view: tuple[Tensor, Tensor] | None = None
    ) -> None:
        """Step ``p`` (state under ``self.state[p]``); ``view``: the (weight, grad) tensors to
        run on instead of ``(p, p.grad)``, e.g. a DTensor's local shard or gathered matrix."""
        w, grad = (p, p.grad) if view is None else view
        state = self._state_for(p, w)
        state["step"] += 1
        t = int(state["step"].item())
        lr, wd, mode = group["lr"], group["weight_decay"], group["wd_mode"]
        assert grad is not None
        u: Tensor = grad if grad.dtype == torch.float32 else grad.float()
        if mode == "coupled" and wd != 0:
            u = u.add(w, alpha=wd)
        u = run_chain(self._stages[p], u, state, w, t)
        eff_lr = chain_lr(self._stages[p], lr, w, state, t)
        if mode == "decoupled_before" and wd != 0:
            w.mul_(1.0 - lr * wd)
        w.add_(u, alpha=-eff_lr)
        if mode == "decoupled_after" and wd != 0:
            w.mul_(1.0 - lr * wd)
        for stage in self._stages[p]:
            after_step = getattr(stage, "after_step", None)
            if after_step is not None:  # e.g. Q-GaLore's INT8 weight grid
                after_step(w, t)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch, but state tensors keep their saved dtype (torch would cast them to the
        parameter dtype, turning fp32 state of bf16 parameters into bf16)."""
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        id_map = dict(zip(saved_ids, params, strict=True))
        super().load_state_dict(state_dict)
        for pid, values in state_dict["state"].items():
            p = id_map[pid]
            for key, v in values.items():
                if isinstance(v, Tensor) and key == "step":  # own counter, never shared
                    self.state[p][key] = v.clone()
                elif isinstance(v, Tensor):
                    self.state[p][key] = v.to(device=p.device, copy=True)
