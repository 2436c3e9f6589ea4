"""The distributed pieces without processes: sharded norms (optim_core/dist_norms.py) equal
the single-process ones (the ranks are threads whose ``reduce`` sums the partial sums of all
shards, in rank order, at a barrier); per-rank state and communication accounting; shard
codecs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import Tensor

import optim_core
from optim_core.base import FP32_CODEC, codec_for_bits
from optim_core.dist_accounting import comm_bytes_per_step, sharded_state_bytes
from optim_core.dist_norms import (
    REDUCIBLE,
    allreduce_calls,
    allreduce_numel,
    ring_allreduce_bytes,
    sharded_normalize,
)
from optim_core.dist_plan import shard_codec, shard_rows
from optim_core.normalize import Normalize


class ThreadSum:
    """An all-reduce (sum) across ``world`` threads."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world)
        self.slots: list[Tensor | None] = [None] * world

    def reduce_of(self, rank: int) -> Callable[[Tensor], Tensor]:
        def reduce(t: Tensor) -> Tensor:
            self.slots[rank] = t.clone()
            self.barrier.wait()
            total = torch.stack([s for s in self.slots if s is not None]).sum(dim=0)
            self.barrier.wait()
            return t.copy_(total)

        return reduce


def sharded(norm: Normalize, u: Tensor, world: int) -> Tensor:
    rows = [shard_rows(u.shape[0], world, r) for r in range(world)]
    shards = u.split(rows)
    summer = ThreadSum(world)
    with ThreadPoolExecutor(world) as pool:
        futures = [
            pool.submit(sharded_normalize, norm, shards[r], tuple(u.shape), summer.reduce_of(r))
            for r in range(world)
        ]
        return torch.cat([f.result(timeout=30) for f in futures])


NORMS = [
    Normalize(kind="col"),
    Normalize(kind="rms"),
    Normalize(kind="frobenius", target=2.0),
    Normalize(kind="standardize", axis="larger"),  # tall: down the columns
    Normalize(kind="standardize", axis="row"),
    Normalize(kind="sinkhorn", iters=5),
]


@pytest.mark.parametrize("norm", NORMS, ids=lambda n: f"{n.kind}-{n.axis}")
@pytest.mark.parametrize("world", [2, 3])
def test_sharded_norm_equals_full(norm: Normalize, world: int) -> None:
    u = torch.randn(13, 7, generator=torch.Generator().manual_seed(0))  # tall, uneven shards
    want = norm.update(u, {}, u, 1)
    got = sharded(norm, u, world)
    assert ((got - want).norm() / want.norm()).item() <= 1e-6
    assert not torch.equal(want, u)  # the norm did something


def test_allreduce_numel_per_kind() -> None:
    shape = (13, 7)
    got = {f"{n.kind}-{n.axis}": allreduce_numel(n, shape) for n in NORMS}
    want = {"col-row": 7, "rms-row": 1, "frobenius-row": 1, "sinkhorn-row": 5 * 7}
    assert got == {**want, "standardize-larger": 14, "standardize-row": 0}
    assert {n.kind for n in NORMS} == REDUCIBLE  # every reducible kind is tested above


def test_bytes_are_counted_per_all_reduce_call() -> None:
    """The accounting floors ``2(w-1)k/w`` per call, as the meter sees calls: summing the
    elements of several calls first overcounts when ``w`` does not divide them."""
    shape = (13, 7)
    calls = {f"{n.kind}-{n.axis}": allreduce_calls(n, shape) for n in NORMS}
    assert calls["sinkhorn-row"] == (7,) * 5 and calls["standardize-larger"] == (7, 7)
    assert calls["rms-row"] == calls["frobenius-row"] == (1,) and calls["standardize-row"] == ()
    per_call = sum(ring_allreduce_bytes(k, 8, 4) for k in (1, 1))  # rms then frobenius, w = 8
    assert per_call == 8 and ring_allreduce_bytes(2, 8, 4) == 12  # not 12: one call each


SHAPES = {"embed.weight": (256, 32), "layers.0.attn.q.weight": (32, 32), "norm.weight": (32,)}


def test_one_rank_accounting_is_the_single_process_one() -> None:
    for name in optim_core.presets.names():
        recipe = optim_core.presets.get(name)
        facts = {"n_heads": 2, "n_kv_heads": 2}
        one = sharded_state_bytes(recipe, SHAPES, 1, model_facts=facts)
        assert one.per_rank == (one.total,)
        assert one.total == optim_core.state_bytes(recipe, SHAPES, model_facts=facts)
        assert comm_bytes_per_step(recipe, SHAPES, 1, model_facts=facts) == (0,)


def test_communication_by_path() -> None:
    """Elementwise recipes send nothing; the owner of a whole matrix receives the other half
    of weight and grad (2 × 16·32 fp32), the other rank its new half (16·32); sinkhorn
    all-reduces."""
    assert comm_bytes_per_step(optim_core.presets.get("adamw"), SHAPES, 2) == (0, 0)
    muon = comm_bytes_per_step(optim_core.presets.get("muon"), SHAPES, 2)
    assert muon == (4 * 2 * 512, 4 * 512)  # q is owned by rank 0
    sink = comm_bytes_per_step(optim_core.presets.get("sinkgd"), SHAPES, 2)
    assert sink == (4 * 5 * 32, 4 * 5 * 32)  # ring all-reduce of 5 column-sum vectors


def test_shard_codec_follows_the_full_tensor() -> None:
    """Shards are quantized exactly when the full tensor is, whatever their own size: a
    4-bit shard of 65·64 elements (a partial block) round-trips; 8-bit shards under 4096
    elements of a quantized tensor are quantized; a full tensor kept fp32 keeps shards fp32."""
    gen = torch.Generator().manual_seed(0)
    four = codec_for_bits(4, signed=True)
    shard4 = shard_codec(four, 130 * 64)
    assert shard4 is not None
    t = torch.randn(65 * 64, generator=gen)
    parts = shard4.encode(t)
    assert set(parts) == {"q", "scale"} and parts["q"].numel() == 65 * 32
    back = shard4.decode(parts, tuple(t.shape))
    assert ((back - t).norm() / t.norm()).item() < 0.2  # 4-bit error, not garbage
    eight = shard_codec(codec_for_bits(8, signed=True), 40 * 129)
    assert eight is not None and set(eight.encode(torch.randn(20 * 129, generator=gen))) == {
        "q",
        "scale",
    }
    kept = shard_codec(four, 129 * 72)  # not a multiple of the 4-bit block: fp32 as a whole
    assert kept is not None and set(kept.encode(torch.randn(65 * 72, generator=gen))) == {""}
    assert shard_codec(FP32_CODEC, 10_000) is FP32_CODEC
