"""Benchmark (not a test): ``step()`` time of every preset on LLaMA-shaped parameters, next to
its reference implementation in the same process.

Parameters are those of the GaLore-protocol LLaMA (docs/references.md#galore-protocol; 60M
config dims by default) with fewer layers / a smaller vocabulary on CPU so the run stays within
minutes. Each optimizer gets the same fixed random gradients; ``--warmup`` steps (which include
the first projector SVD / torch.compile) are not timed; the table shows the median of
``--iters`` steps, taken alternately for a preset and its references (same machine load for
both). GaLore-type projectors refresh every 200 steps, so the timed steps exclude the SVD
(identically for ours and the references). The first step of each optimizer is reported on its
own (``first_ms``: state allocation, first SVD, and ``torch.compile`` when ``--compile on``).

Bandwidth bound: every step must at least read the gradient, read and write the parameter and
read and write each optimizer-state byte once, so ``bytes = n·(2·param + grad bytes) +
2·state_bytes``; ``bound_ms = bytes / triad bandwidth`` (``a = b + s·c`` on 64 MiB fp32 arrays,
measured in the same process and thread count); ``× bound`` = step ms / bound ms (torch AdamW
fp32 touches 28 B/param).

    .venv/bin/python bench/optimizer_step.py --out /tmp/optimizer_step.json            # CPU
    .venv/bin/python bench/optimizer_step.py --device cuda --layers 8 --vocab 32000     # GPU, bf16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from optimizer_refs import Params, RefFactory, references  # bench/optimizer_refs.py, a sibling

import optim_core
from optim_core import fused
from optim_core.testing import llama_shapes


def make_params(shapes: dict, device: str, dtype: torch.dtype) -> Params:
    gen = torch.Generator().manual_seed(0)
    params = {}
    for name, shape in shapes.items():
        p = torch.nn.Parameter((torch.randn(shape, generator=gen) * 0.02).to(device, dtype))
        p.grad = (torch.randn(shape, generator=gen) * 1e-3).to(device, dtype)
        params[name] = p
    return params


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def triad_gbps(device: str, clock: Callable[[], float], n: int = 1 << 24, reps: int = 5) -> float:
    """STREAM-style triad ``a = b + s·c`` (fp32, 3 arrays of ``n``): best GB/s of ``reps``."""
    b, c = torch.rand(n, device=device), torch.rand(n, device=device)
    a = torch.empty_like(b)
    best = math.inf
    for _ in range(reps + 1):
        _sync(device)
        start = clock()
        torch.add(b, c, alpha=0.5, out=a)
        _sync(device)
        best = min(best, clock() - start)
    return 3 * 4 * n / best / 1e9


def bytes_touched(opt: torch.optim.Optimizer, n_params: int, param_bytes: int) -> int:
    """Minimum traffic of one step: grad read, param read+write, every state byte read+written."""
    return n_params * 3 * param_bytes + 2 * optim_core.measure_state_bytes(opt)


def time_interleaved(
    runs: list[list[torch.optim.Optimizer]],
    device: str,
    warmup: int,
    iters: int,
    clock: Callable[[], float] = time.perf_counter,
    first: list[float] | None = None,
) -> list[float]:
    """Median wall time (ms) of one ``step()`` of each entry of ``runs`` (each a list of
    optimizers stepped together). Steps alternate between the entries so that all of them see
    the same machine load (the CPU of a shared box is noisy). ``first`` receives the time (ms)
    of each entry's first step (compile time, first SVD), which is never among the timed ones."""
    for i in range(max(warmup, 1)):
        for opts in runs:
            start = clock()
            for opt in opts:
                opt.step()
            _sync(device)
            if i == 0 and first is not None:
                first.append((clock() - start) * 1e3)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(iters):
        for j, opts in enumerate(runs):
            start = clock()
            for opt in opts:
                opt.step()
            _sync(device)
            times[j].append((clock() - start) * 1e3)
    return [statistics.median(t) for t in times]


def _preset_row(
    name: str,
    args: argparse.Namespace,
    shapes: dict,
    refs: dict[str, list[tuple[str, RefFactory]]],
    clock: Callable[[], float],
    gbps: float,
) -> tuple[dict[str, Any], list[float]]:
    """One preset timed against its references: (table row, reference step ms)."""
    device, dtype = args.device, torch.bfloat16 if args.dtype == "bf16" else torch.float32
    n_params, param_bytes = sum(math.prod(s) for s in shapes.values()), dtype.itemsize
    opt = optim_core.build(optim_core.presets.get(name), make_params(shapes, device, dtype))
    # presets without a package reference are timed against torch AdamW (the target for
    # stateless presets is "no slower than adamw")
    ref_list = refs.get(name) or refs["adamw"]
    ref_opts = [factory(make_params(shapes, device, dtype)) for _, factory in ref_list]
    first: list[float] = []
    runs: list[list[torch.optim.Optimizer]] = [[opt], *ref_opts]
    ms, *ref_ms = time_interleaved(runs, device, args.warmup, args.iters, clock, first)
    bound_ms = bytes_touched(opt, n_params, param_bytes) / (gbps * 1e9) * 1e3
    row = {
        "preset": name,
        "ms": ms,
        "first_ms": first[0],
        "bound_ms": bound_ms,
        "x_bound": ms / bound_ms,
        "bytes_per_param": bytes_touched(opt, n_params, param_bytes) / n_params,
        "state_bytes_per_param": optim_core.measure_state_bytes(opt) / n_params,
        "refs": [
            {"reference": label, "ms": r, "ratio": ms / r, "first_ms": f}
            for (label, _), r, f in zip(ref_list, ref_ms, first[1:], strict=True)
        ],
    }
    return row, ref_ms


def bench(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    shapes = llama_shapes(vocab=args.vocab, d=args.dim, inter=args.ffn, layers=args.layers)
    refs = references(args.torchao)
    names = args.presets.split(",") if args.presets else optim_core.presets.names()
    rows: list[dict[str, Any]] = []
    adamw_ref_ms: float | None = None
    clock = time.process_time if args.clock == "process" else time.perf_counter
    gbps = triad_gbps(device, clock)
    print(f"triad bandwidth {gbps:.1f} GB/s", flush=True)
    for name in names:
        row, ref_ms = _preset_row(name, args, shapes, refs, clock, gbps)
        if name == "adamw":
            adamw_ref_ms = ref_ms[0]
        rows.append(row)
        _echo_row(row)
    for row in rows:
        row["vs_torch_adamw"] = row["ms"] / adamw_ref_ms if adamw_ref_ms else None
    return {
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "dtype": args.dtype,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "shape": {"dim": args.dim, "ffn": args.ffn, "layers": args.layers, "vocab": args.vocab},
        "n_params": sum(math.prod(s) for s in shapes.values()),
        "warmup": args.warmup,
        "iters": args.iters,
        "clock": args.clock,
        "compile": args.compile,
        "triad_gbps": gbps,
        "loadavg_1m": os.getloadavg()[0],
        "rows": rows,
    }


def _echo_row(row: dict[str, Any]) -> None:
    refs = row["refs"] or [{"reference": "-", "ms": float("nan"), "ratio": float("nan")}]
    for i, ref in enumerate(refs):
        left = f"{row['preset']:<12} {row['ms']:>10.1f}" if i == 0 else f"{'':<12} {'':>10}"
        print(
            f"{left}  {ref['reference']:<34} {ref['ms']:>10.1f} {ref['ratio']:>6.2f}", flush=True
        )


def markdown_table(result: dict[str, Any]) -> str:
    """The result as a markdown table (for docs/benchmarks.md)."""
    lines = [
        "| preset | step ms (median) | first step ms | reference | ref ms | ratio | × torch AdamW"
        " | B/param touched | × bandwidth bound | state B/param |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        refs = row["refs"] or [{"reference": "—", "ms": None, "ratio": None}]
        vs = row["vs_torch_adamw"]
        for i, ref in enumerate(refs):
            first = i == 0
            lines.append(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                    row["preset"] if first else "",
                    f"{row['ms']:.1f}" if first else "",
                    f"{row['first_ms']:.0f}" if first else "",
                    ref["reference"],
                    f"{ref['ms']:.1f}" if ref["ms"] is not None else "—",
                    f"{ref['ratio']:.2f}" if ref["ratio"] is not None else "—",
                    f"{vs:.2f}" if first and vs is not None else "",
                    f"{row['bytes_per_param']:.1f}" if first else "",
                    f"{row['x_bound']:.1f}" if first else "",
                    f"{row['state_bytes_per_param']:.3f}" if first else "",
                )
            )
    return "\n".join(lines)


def _add_shape_args(ap: argparse.ArgumentParser, cuda: bool) -> None:
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument(
        "--dtype", choices=["fp32", "bf16"], default=None, help="default: bf16 on CUDA"
    )
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--ffn", type=int, default=1376)
    ap.add_argument("--layers", type=int, default=None, help="default: 8 on CUDA, 2 on CPU")
    ap.add_argument("--vocab", type=int, default=None, help="default: 32000 on CUDA, 4096 on CPU")


def _add_run_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--warmup", type=int, default=None, help="default: 5 on CUDA, 2 on CPU")
    ap.add_argument("--iters", type=int, default=None, help="default: 20 on CUDA, 5 on CPU")
    ap.add_argument("--presets", default="", help="comma-separated subset (default: all)")
    ap.add_argument(
        "--torchao",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time torchao AdamW8bit/4bit (torch.compile; default: on CUDA only)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="process: CPU time of this process (steadier on a shared CPU; use with --threads 1)",
    )
    ap.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="torch.compile'd quantized Adam step (optim_core.fused; auto: CUDA on, CPU off)",
    )
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    ap.add_argument("--markdown", type=Path, default=None, help="write the markdown table here")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_shape_args(ap, torch.cuda.is_available())
    _add_run_args(ap)
    args = ap.parse_args()
    on_gpu = args.device.startswith("cuda")
    args.dtype = args.dtype or ("bf16" if on_gpu else "fp32")
    args.layers = args.layers if args.layers is not None else (8 if on_gpu else 2)
    args.vocab = args.vocab if args.vocab is not None else (32000 if on_gpu else 4096)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 2)
    args.iters = args.iters if args.iters is not None else (20 if on_gpu else 5)
    args.torchao = on_gpu if args.torchao is None else args.torchao
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fused.set_compile({"auto": None, "on": True, "off": False}[args.compile])
    print(f"{'preset':<12} {'ms':>10}  {'reference':<34} {'ref ms':>10} {'ratio':>6}", flush=True)
    result = bench(args)
    table = markdown_table(result)
    print(table)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
