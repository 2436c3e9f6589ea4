"""The distributed step's entry point, free of ``torch.distributed.tensor`` imports.

:class:`optim_core.RecipeOptimizer` asks :func:`has_dtensor` for every param group and hands
groups holding ``DTensor`` parameters (FSDP2, HSDP, tensor parallel) to :func:`step_dtensors`.
The implementation, :mod:`optim_core.dist_step`, imports ``torch.distributed.tensor`` (about
1 s on the CPU VM), so it is loaded on the first ``DTensor`` step only: single-process and DDP
users never pay for it. No ``DTensor`` can exist before ``torch.distributed.tensor`` is
imported, which makes the check below free otherwise. See docs/distributed.md.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor

__all__ = ["has_dtensor", "step_dtensors"]


def has_dtensor(params: Iterable[Tensor]) -> bool:
    """Whether any of ``params`` is a ``DTensor``."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and any(isinstance(p, module.DTensor) for p in params)


def step_dtensors(opt: Any, params: Sequence[Tensor], group: dict[str, Any]) -> None:
    """One step of ``params`` of ``group`` (:func:`optim_core.dist_step.step_dtensors`)."""
    importlib.import_module("optim_core.dist_step").step_dtensors(opt, params, group)
