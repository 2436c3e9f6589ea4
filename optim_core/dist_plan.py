"""Which path a sharded parameter takes in a distributed step (no communication here).

Under FSDP2 (``torch.distributed.fsdp.fully_shard``) every parameter is a ``DTensor`` sharded on
dim 0 over a 1-D device mesh. :func:`path_of` picks, per parameter, from its compiled stages:

- ``"local"``: every stage is elementwise (Adam, EMA, sign, scale, low-bit codecs), reduces
  only within a row (``row`` norm, row-wise ``standardize``: rows live whole on one rank under
  ``Shard(0)``), or is a norm whose statistics span the rows (``col``, ``rms``, ``frobenius``,
  column-wise ``standardize``, ``sinkhorn``), computed from all-reduced partial sums
  (:mod:`optim_core.dist_norms`): the stages run on the local shard, their state is allocated
  for the local shard only (ZeRO-style); only those norms communicate (a few vectors).
- ``"owner"``: some stage needs the whole matrix (ns, whiten, svd, low-rank projection, COSMOS,
  Adafactor's factored statistics, Adam-mini blocks, Q-GaLore's weight grid, FRUGAL's block
  choice, Muon's shape factor): one rank (assigned round-robin over such parameters in
  model order) receives the shards of weight and gradient, runs the exact single-process
  pipeline on the full matrix, holds the full state, and sends every rank its rows of the new
  weight (:mod:`optim_core.dist_exchange`).

:func:`assign_owners` and :func:`shard_rows` are the rules the runtime
(:mod:`optim_core.dist_step`) and the analytical accounting (:mod:`optim_core.dist_accounting`)
share, so both agree. See docs/distributed.md for the communication volume of each path.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any, Literal

from optim_core.adaptive import Adam
from optim_core.base import Stage, StateCodec, numel
from optim_core.dist_norms import REDUCIBLE, Reduce, on_shard
from optim_core.momentum import Ema
from optim_core.normalize import Normalize, Scale
from optim_core.quantize import BlockwiseCodec

StepPath = Literal["local", "owner"]

ELEMENTWISE_NORMS = frozenset({"sign"})
ROW_NORMS = frozenset({"row"}) | REDUCIBLE  # per row (local) or all-reduced across the rows


def stage_is_local(stage: Stage, rows_whole: bool) -> bool:
    """Whether ``stage`` runs on a shard: elementwise, or (when ``rows_whole``: the tensor is
    split along dim 0 over a 1-D mesh) a norm that is per row or all-reduces its statistics."""
    if isinstance(stage, Adam | Ema | Scale):
        return True
    if isinstance(stage, Normalize):
        return stage.kind in ELEMENTWISE_NORMS or (rows_whole and stage.kind in ROW_NORMS)
    return False


def path_of(stages: Sequence[Stage], rows_whole: bool = True) -> StepPath:
    """``"local"`` when every stage is shard-local, else ``"owner"`` (see the module doc)."""
    return "local" if all(stage_is_local(st, rows_whole) for st in stages) else "owner"


def shard_codec(codec: StateCodec | None, full_numel: int) -> StateCodec | None:
    """``codec`` for a shard of a tensor of ``full_numel`` elements: a block-wise codec
    quantizes every shard when it quantizes the full tensor (whatever the shard's size) and
    none when it does not, so a sharded run stores state as the unsharded one; other codecs
    are returned as they are."""
    if not isinstance(codec, BlockwiseCodec):
        return codec
    if codec.state_bytes((full_numel,)) < 4 * full_numel:  # quantized (else kept fp32)
        return dataclasses.replace(codec, min_numel=0, partial_blocks=True)
    return dataclasses.replace(codec, min_numel=sys.maxsize)


def localize(
    stages: Sequence[Stage], full_shape: tuple[int, ...], reduce: Reduce | None = None
) -> list[Stage]:
    """Shard-local copies of ``stages`` of a parameter of ``full_shape``: their state codecs
    decided by the full tensor (:func:`shard_codec`), and, given ``reduce`` (a sum over the
    ranks), norms spanning the rows told the full shape and the sum (:func:`on_shard`); other
    stages as they are."""
    n = numel(full_shape)
    out: list[Stage] = []
    for stage in stages:
        if reduce is not None and isinstance(stage, Normalize) and stage.kind in REDUCIBLE:
            out.append(on_shard(stage, full_shape, reduce))
            continue
        fields: dict[str, Any] = {}
        for key in ("codec", "codec_v"):
            if isinstance(getattr(stage, key, None), BlockwiseCodec):
                fields[key] = shard_codec(getattr(stage, key), n)
        out.append(dataclasses.replace(stage, **fields) if fields else stage)  # type: ignore[type-var]
    return out


def assign_owners(paths: Sequence[StepPath], world: int) -> list[int | None]:
    """Owner rank of each parameter (model order): round-robin over the ``"owner"`` ones,
    ``None`` for shard-local ones."""
    owners: list[int | None] = []
    count = 0
    for path in paths:
        if path == "owner":
            owners.append(count % world)
            count += 1
        else:
            owners.append(None)
    return owners


def shard_rows(rows: int, world: int, rank: int) -> int:
    """Rows of ``rank``'s ``Shard(0)`` piece of a dim of ``rows`` (``torch.chunk`` sizes, as
    FSDP2 / DTensor: ``ceil(rows/world)`` per rank, the last ones shorter or empty)."""
    chunk = -(-rows // world)
    return max(0, min(rows, (rank + 1) * chunk) - rank * chunk)


def shard_shape(shape: tuple[int, ...], world: int, rank: int) -> tuple[int, ...]:
    """``shape`` of ``rank``'s ``Shard(0)`` piece (a 0-D shape is replicated)."""
    if not shape:
        return shape
    return (shard_rows(shape[0], world, rank), *shape[1:])
