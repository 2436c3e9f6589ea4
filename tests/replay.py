"""Replaying fixed gradients through an optimizer: the equivalence tests' common harness."""

from __future__ import annotations

from collections.abc import Callable

import torch

Grads = list[dict[str, torch.Tensor]]


def seeded_setup(
    shapes: dict[str, tuple[int, ...]], steps: int, seed: int
) -> tuple[dict[str, torch.Tensor], Grads]:
    """Initial weights and ``steps`` gradients per parameter, from one seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    p0 = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    grads = [{n: torch.randn(s, generator=gen) for n, s in shapes.items()} for _ in range(steps)]
    return p0, grads


def replay(
    opt_factory: Callable[[dict[str, torch.nn.Parameter]], torch.optim.Optimizer],
    p0: dict[str, torch.Tensor],
    grads: Grads,
) -> tuple[dict[str, torch.Tensor], torch.optim.Optimizer]:
    """Fresh parameters from ``p0``, one ``opt.step()`` per gradient set: (weights, optimizer)."""
    params = {n: torch.nn.Parameter(t.clone()) for n, t in p0.items()}
    opt = opt_factory(params)
    for g in grads:
        for n, p in params.items():
            p.grad = g[n].clone()
        opt.step()
    return {n: p.detach() for n, p in params.items()}, opt


def max_rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest relative Frobenius difference ``|a - b| / |b|`` over the parameters."""
    return max(((a[n] - b[n]).norm() / b[n].norm()).item() for n in a)
