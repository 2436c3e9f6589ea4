"""Count the bytes this rank receives in the optimizer's collectives (measurement aid).

``with CommMeter() as meter: opt.step()`` wraps ``torch.distributed.all_to_all_single`` (the
whole-matrix exchange, :mod:`optim_core.dist_exchange`) and ``torch.distributed.all_reduce``
(the sharded norms, :mod:`optim_core.dist_norms`) for the duration of the block; ``meter.bytes``
is then what this rank received: for an all-to-all, the parts other ranks sent it; for an
all-reduce of ``k`` elements over ``w`` ranks, ``2·(w − 1)/w·k`` (a ring all-reduce), the
convention of :func:`optim_core.dist_accounting.comm_bytes_per_step`. The HSDP path's
``full_tensor()`` all-gathers are not counted. Not thread-safe (it patches the module).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.distributed as dist
from torch import Tensor

from optim_core.dist_norms import ring_allreduce_bytes

__all__ = ["CommMeter"]


class CommMeter:
    """Context manager counting received bytes in ``bytes`` (and calls in ``calls``)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.calls = 0
        self._saved: dict[str, Callable[..., Any]] = {}

    def _all_to_all(
        self, output: Tensor, inp: Tensor, out_sizes: Any = None, *a: Any, **kw: Any
    ) -> Any:
        group = kw.get("group")
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        sizes = list(out_sizes) if out_sizes is not None else [output.numel() // world] * world
        self.bytes += (sum(sizes) - sizes[rank]) * output.element_size()
        self.calls += 1
        return self._saved["all_to_all_single"](output, inp, out_sizes, *a, **kw)

    def _all_reduce(self, tensor: Tensor, *a: Any, **kw: Any) -> Any:
        world = dist.get_world_size(kw.get("group"))
        self.bytes += ring_allreduce_bytes(tensor.numel(), world, tensor.element_size())
        self.calls += 1
        return self._saved["all_reduce"](tensor, *a, **kw)

    def __enter__(self) -> CommMeter:
        for name, wrapper in (
            ("all_to_all_single", self._all_to_all),
            ("all_reduce", self._all_reduce),
        ):
            self._saved[name] = getattr(dist, name)
            setattr(dist, name, wrapper)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, fn in self._saved.items():
            setattr(dist, name, fn)
        self._saved.clear()
