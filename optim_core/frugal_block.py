"""FRUGAL's Block variant (Zmushko et al., ICML 2025; docs/references.md#frugal): the paper's default.

Among the ``count`` matrices of a route (model order), ``round(density·count)`` are *active*:
they take a full torch-style Adam step and hold its ``m``, ``v``; every other matrix takes a
state-free signSGD step ``inactive_scale·sign(G)``. Every ``refresh`` steps the active set moves
on in ``order`` (FRUGAL ``BlockOptimizer``): ``descending`` starts at the last matrix and walks
down, ``ascending`` starts at the first, ``mirror`` takes pairs from both ends, ``random`` draws
a permutation (seeded per rotation here; the reference uses the global RNG). At each rotation
all statistics are dropped, so a newly active matrix restarts Adam with zero moments and a fresh
bias correction, and an inactive one holds no state at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from optim_core.adaptive import Adam

BlockOrder = Literal["descending", "ascending", "mirror", "random"]


def active_positions(
    count: int, n_active: int, order: BlockOrder, rotation: int, seed: int = 0
) -> frozenset[int]:
    """Positions (0-based, model order) of the active matrices during ``rotation`` (0-based)."""
    if n_active <= 0 or count <= 0:
        return frozenset()
    if order == "random":
        gen = torch.Generator().manual_seed(seed + rotation)
        return frozenset(torch.randperm(count, generator=gen)[:n_active].tolist())
    if order == "ascending":
        start = rotation * n_active
        return frozenset((start + j) % count for j in range(n_active))
    if order == "descending":
        start = count - 1 - rotation * n_active
        return frozenset((start - j) % count for j in range(n_active))
    half = count // 2  # mirror: pairs (i, count-1-i)
    start = rotation * (n_active // 2)
    picked = [(start + j) % half for j in range(n_active // 2)]
    return frozenset([*picked, *(count - 1 - i for i in picked)])


@dataclass
class FrugalBlock:
    """One matrix of a FRUGAL-Block route; ``position``/``count`` place it in the route."""

    inner: Adam
    position: int
    count: int
    density: float = 0.25
    refresh: int = 200
    order: BlockOrder = "descending"
    inactive_scale: float = 1.0
    seed: int = 0
    name: str = "frugal_block"

    def __post_init__(self) -> None:
        if self.order == "mirror" and self.n_active % 2:
            raise ValueError(
                f"frugal block order 'mirror' needs an even number of active matrices, got "
                f"{self.n_active} of {self.count}"
            )

    @property
    def n_active(self) -> int:
        return round(self.count * self.density)

    def active(self, rotation: int) -> bool:
        """Whether this matrix is active during ``rotation``."""
        positions = active_positions(self.count, self.n_active, self.order, rotation, self.seed)
        return self.position in positions

    def init(self, p: Tensor) -> dict[str, Tensor]:
        return self.inner.init(p) if self.active(0) else {}

    def update(self, u: Tensor, state: dict[str, Tensor], p: Tensor, step: int) -> Tensor:
        rotation, local = divmod(step - 1, self.refresh)
        active = self.active(rotation)
        if local == 0 and rotation > 0:  # a new active set: statistics reset
            state.clear()
            if active:
                state.update(self.inner.init(p))
        if not active:
            return torch.sign(u).mul_(self.inactive_scale)
        return self.inner.update(u, state, p, local + 1)

    def state_bytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return self.inner.state_bytes(shape, dtype) if self.active(0) else 0
