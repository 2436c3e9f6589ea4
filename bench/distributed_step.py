"""Benchmark (not a test): optimizer ``step()`` time, state bytes and bytes communicated per
step under FSDP2 on CPU (gloo), world size 1 (the plain single-process optimizer) and 2.

Model: the LLaMA of a workload (default ``shakespeare-lm``: dim 128, 4 layers, ~0.9M params).
One forward/backward makes the gradients; then ``--iters`` timed ``opt.step()`` calls (after
``--warmup`` untimed ones), each between two barriers; the table gives the median over steps
of the slowest rank. Bytes communicated are what each rank received per step in the
optimizer's own collectives, measured (``optim_core.dist_meter.CommMeter``: the all-to-alls of
whole-matrix parameters, all-reduced norm statistics) next to the analytical count
(``optim_core.dist_accounting.comm_bytes_per_step``); FSDP2's all-gather / reduce-scatter of
the training step are not included. ``state`` is ``measure_state_bytes`` per rank.

    .venv/bin/python bench/distributed_step.py --out bench/results/distributed_step_cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.fsdp import fully_shard

import optim_core
from core.workloads import get_workload
from optim_core.dist_accounting import comm_bytes_per_step
from optim_core.dist_meter import CommMeter
from workers.model import build_model

PRESETS = ["adamw", "muon", "swan", "galore"]


def _model(workload: str, world: int) -> tuple[nn.Module, dict[str, tuple[int, ...]]]:
    model = build_model(get_workload(workload).model, seed=0)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    if world > 1:
        for block in model.layers:  # type: ignore[union-attr]
            fully_shard(block)
        fully_shard(model)
    x = torch.randint(0, 256, (8, 65), generator=torch.Generator().manual_seed(0))
    logits = model(x[:, :-1])
    nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
    return model, shapes


def _timed_step(opt: torch.optim.Optimizer, world: int) -> float:
    if world > 1:
        dist.barrier()
    t0 = time.perf_counter()
    opt.step()
    if world > 1:
        dist.barrier()
    return time.perf_counter() - t0


def measure(preset: str, workload: str, world: int, warmup: int, iters: int) -> dict[str, Any]:
    """One preset on this rank: step times (s), state bytes, analytical communication."""
    model, shapes = _model(workload, world)
    recipe = optim_core.presets.get(preset)
    opt = optim_core.build(recipe, model)
    for _ in range(warmup):
        _timed_step(opt, world)
    with CommMeter() as meter:
        times = [_timed_step(opt, world) for _ in range(iters)]
    rank = dist.get_rank() if world > 1 else 0
    return {
        "times": times,
        "state_bytes": optim_core.measure_state_bytes(opt),
        "comm_bytes": meter.bytes // iters,
        "comm_bytes_predicted": comm_bytes_per_step(recipe, shapes, world)[rank],
    }


def rank_main(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(args.threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    timeout = datetime.timedelta(seconds=120)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    try:
        res = {p: measure(p, args.workload, world, args.warmup, args.iters) for p in args.presets}
        Path(out, f"rank{rank}.json").write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_world(world: int, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    if world == 1:
        torch.set_num_threads(args.threads)
        one = {p: measure(p, args.workload, 1, args.warmup, args.iters) for p in args.presets}
        return [one]
    mp.spawn(rank_main, args=(world, _free_port(), args, str(tmp)), nprocs=world)
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(world)]


def summarize(world: int, ranks: list[dict[str, Any]], preset: str) -> dict[str, Any]:
    slowest = [max(step) for step in zip(*(r[preset]["times"] for r in ranks), strict=True)]
    return {
        "preset": preset,
        "world": world,
        "step_ms": 1e3 * statistics.median(slowest),
        "state_bytes_per_rank": [r[preset]["state_bytes"] for r in ranks],
        "comm_bytes_per_rank": [r[preset]["comm_bytes"] for r in ranks],
        "comm_bytes_predicted": [r[preset]["comm_bytes_predicted"] for r in ranks],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--workload", default="shakespeare-lm")
    parser.add_argument("--worlds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for world in args.worlds:
        tmp = Path(os.environ.get("TMPDIR", "/tmp"), f"optforge-dist-bench-{os.getpid()}-{world}")
        tmp.mkdir(parents=True, exist_ok=True)
        ranks = run_world(world, args, tmp)
        rows += [summarize(world, ranks, p) for p in args.presets]
    print(f"{'preset':<8} {'world':>5} {'step ms':>9} {'state B/rank':>22} {'comm B/rank':>22}")
    for r in rows:
        state, comm = (
            "/".join(map(str, r["state_bytes_per_rank"])),
            "/".join(map(str, r["comm_bytes_per_rank"])),
        )
        print(f"{r['preset']:<8} {r['world']:>5} {r['step_ms']:>9.2f} {state:>22} {comm:>22}")
    if args.out:
        env = {"torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count()}
        args.out.write_text(
            json.dumps(
                {"env": env, "args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1
            )
        )


if __name__ == "__main__":
    main()
