"""Rank-side code of the distributed tests (test_oc_distributed.py): gloo process groups on
CPU, spawned with a deadline so a failing rank cannot hang the suite.

Every rank trains on the *same* batches, so the data-parallel average of the gradients equals
the single-process gradient bit for bit ((g + g)/2 = g); what differs between the runs is only
the optimizer's sharded / gathered step, which is what these tests measure.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

import optim_core
from core.workloads import get_workload
from optim_core.dist_accounting import comm_bytes_per_step, sharded_state_bytes
from optim_core.dist_meter import CommMeter
from optim_core.optimizer import module_facts
from workers.model import build_model

STEPS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(fn: Callable[..., None], world: int, args: tuple[Any, ...], timeout_s: float) -> None:
    """Run ``fn(rank, world, port, *args)`` on ``world`` processes; raise if one fails or the
    whole does not finish within ``timeout_s`` (the ranks are then killed)."""
    ctx = mp.start_processes(fn, (world, free_port(), *args), nprocs=world, join=False)
    deadline = time.monotonic() + timeout_s
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"ranks still running after {timeout_s} s")
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()


def init(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    timeout = datetime.timedelta(seconds=60)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)


def lm() -> nn.Module:
    """The synthetic-lm model (vocab 256, dim 32, 2 layers, 2 heads), seed 0."""
    return build_model(get_workload("synthetic-lm").model, seed=0)


def lm_batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (4, 17), generator=g) for _ in range(STEPS)]


def lm_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits = model(x[:, :-1])
    return nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())


def odd() -> nn.Module:
    """Uneven shards (129 rows over 2 ranks) whose 8-bit blocks straddle the shard boundary
    in the unsharded layout (65·72 = 4680 elements per shard, not a multiple of 256), and a
    (40, 129) weight quantized as a whole (5160 elements) but not per shard (2580 < 4096)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(72, 129), nn.Tanh(), nn.Linear(129, 40))


def odd_batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return [torch.randn(8, 72, generator=g) for _ in range(STEPS)]


def odd_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (model(x) - x[:, :40].flip(-1)).square().mean()


MODELS = {"lm": (lm, lm_batches, lm_loss), "odd": (odd, odd_batches, odd_loss)}


def train(model: nn.Module, opt: torch.optim.Optimizer, kind: str) -> CommMeter:
    """``STEPS`` steps; the returned meter counted the bytes received in ``opt.step()``."""
    _, batches, loss_fn = MODELS[kind]
    meter = CommMeter()
    for x in batches():
        loss_fn(model, x).backward()
        with meter:
            opt.step()
        opt.zero_grad()
    return meter


def shard(model: nn.Module, mesh: DeviceMesh | None = None) -> nn.Module:
    """FSDP2: each child module (block of a ModuleList) with parameters, then the root; on a
    2-D ``mesh`` that is HSDP (replicated over dim 0, sharded over dim 1)."""
    for child in model.children():
        for block in child if isinstance(child, nn.ModuleList) else [child]:
            if any(True for _ in block.parameters()):
                fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def wrap(model: nn.Module, mode: str, world: int) -> nn.Module:
    """``fsdp`` (1-D mesh), ``hsdp`` (a (1, world) mesh: parameters placed (Replicate(),
    Shard(0)), the >1-D mesh path) or ``ddp``."""
    if mode == "fsdp":
        return shard(model)
    if mode == "hsdp":
        return shard(model, init_device_mesh("cpu", (1, world), mesh_dim_names=("dp", "fs")))
    return DistributedDataParallel(model)


def full(p: torch.Tensor) -> torch.Tensor:
    return p.full_tensor() if isinstance(p, DTensor) else p.detach()


def compare(model: nn.Module, ref: nn.Module) -> float:
    """Largest relative difference ‖W − W_ref‖/‖W_ref‖ over the parameters."""
    worst = 0.0
    pairs = zip(model.named_parameters(), ref.named_parameters(), strict=True)
    for (name, p), (ref_name, q) in pairs:
        assert name.removeprefix("module.") == ref_name
        worst = max(worst, ((full(p) - q).norm() / q.norm().clamp_min(1e-30)).item())
    return worst


def parallel_run(preset: str, kind: str, mode: str, world: int) -> dict[str, Any]:
    """Train under ``mode`` (:func:`wrap`); the model, its optimizer's bytes and the prediction
    (FSDP2 on a 1-D mesh: :func:`sharded_state_bytes`)."""
    model = MODELS[kind][0]()
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    facts = module_facts(model)
    model = wrap(model, mode, world)
    opt = optim_core.build(optim_core.presets.get(preset), model)
    meter = train(model, opt, kind)
    recipe = optim_core.presets.get(preset)
    predicted = sharded_state_bytes(recipe, shapes, world, model_facts=facts).per_rank
    return {
        "model": model,
        "bytes": optim_core.measure_state_bytes(opt),
        "predicted": predicted,
        "reloads": reloads(opt, model, preset),
        "comm": meter.bytes / STEPS,
        "predicted_comm": comm_bytes_per_step(recipe, shapes, world, model_facts=facts),
    }


def reloads(opt: torch.optim.Optimizer, model: nn.Module, preset: str) -> bool:
    """Whether this rank's ``state_dict`` loads into a fresh optimizer with equal tensors."""
    fresh = optim_core.build(optim_core.presets.get(preset), model)
    fresh.load_state_dict(opt.state_dict())
    pairs = [(opt.state[p], fresh.state[p]) for p in model.parameters()]
    return all(
        a.keys() == b.keys()
        and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
        for a, b in pairs
    )


def one_case(preset: str, kind: str, modes: list[str], world: int) -> dict[str, Any]:
    """The single-process run, then each parallel mode compared with it."""
    ref = MODELS[kind][0]()
    ref_opt = optim_core.build(optim_core.presets.get(preset), ref)
    train(ref, ref_opt, kind)
    single = optim_core.measure_state_bytes(ref_opt)
    out = {}
    for mode in modes:
        run = parallel_run(preset, kind, mode, world)
        out[mode] = {
            "rel": compare(run["model"], ref),
            "bytes": run["bytes"],
            "single_bytes": single,
            "predicted": list(run["predicted"]),
            "reloads": run["reloads"],
            "comm": run["comm"],
            "predicted_comm": list(run["predicted_comm"]),
        }
    return out


def run_cases(rank: int, world: int, port: int, cases: list[list[Any]], out: str) -> None:
    """Rank body: every ``[preset, model kind, modes]`` case; writes ``{out}/rank{r}.json``
    with ``{"preset/kind": {mode: {rel, bytes, single_bytes, predicted}}}``."""
    init(rank, world, port)
    try:
        results = {f"{p}/{k}": one_case(p, k, modes, world) for p, k, modes in cases}
        Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()
