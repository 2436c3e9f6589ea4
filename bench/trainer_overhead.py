"""Benchmark (not a test): tokens/s of ``workers.train.train`` vs a bare 10-line loop.

Same model (same seed), recipe, batches (``data.train_batch(step)``) and lr schedule; the bare
loop has no metrics, callbacks, divergence checks or evaluation. ``train()`` reports tokens/s over
its training time (evaluations excluded); the table also shows tokens/s over its whole wall time
(one final evaluation on one held-out batch included). Rounds alternate bare/train so machine load hits both
alike (odd rounds run train() first); medians over rounds are reported. Target: train >= 0.95 x bare.

    .venv/bin/python bench/trainer_overhead.py --workload synthetic-lm --steps 200 --rounds 5
    .venv/bin/python bench/trainer_overhead.py --workload shakespeare-lm --steps 30 --rounds 4
    .venv/bin/python bench/trainer_overhead.py --workload shakespeare-lm-20m --device cuda \
        --steps 100 --rounds 3        # GPU: bf16 autocast in both loops

``--full-step adamw,adamw_8bit,...,trial-28`` instead times the bare loop's whole training step
(forward, backward, ``opt.step()``, schedule) of each preset against AdamW's, rounds alternating
the preset order, and reports the ``opt.step()`` share; ``trial-28`` is the best searched recipe
of docs/search-results.md (``[standardize, whiten]`` on matrices, 4-bit momentum EMA after the
norms, β 0.915, lr 6.61e-3, 4-bit AdamW elsewhere).

    .venv/bin/python bench/trainer_overhead.py --workload shakespeare-lm --threads 1 \
        --full-step adamw,adamw_8bit,adamw_4bit,cosmos,q_galore,trial-28 --steps 20 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import optim_core  # noqa: E402
from core.config import get_settings  # noqa: E402
from core.workloads import WorkloadSpec, get_workload  # noqa: E402
from workers.data import Batches, load_data  # noqa: E402
from workers.model import build_model  # noqa: E402
from workers.train import TrainConfig, TrainResult, lm_loss, lr_factor, train  # noqa: E402

TRIAL_28 = {
    "name": "trial-28",
    "lr": 0.00661,
    "weight_decay": 0.0,
    "design": {
        "norms": ["standardize", "whiten"],
        "momentum": {"beta": 0.915, "placement": "matrices", "position": "after_norm"},
        "state_bits": 4,
    },
}


def recipe_of(name: str) -> optim_core.Recipe:
    """A preset, or the searched ``trial-28`` recipe."""
    if name == "trial-28":
        return optim_core.Recipe.model_validate(TRIAL_28)
    return optim_core.presets.get(name)


def timed_loop(
    model: torch.nn.Module, opt: torch.optim.Optimizer, data: Batches, steps: int
) -> tuple[float, float]:
    """CPU seconds per training step (bare loop, CPU) and of ``opt.step()`` within it."""
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps))
    x, y = data.train_batch(0)  # untimed first step: state allocation
    lm_loss(model(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    total = in_step = 0.0
    for step in range(steps):
        start = time.process_time()
        x, y = data.train_batch(step)
        loss = lm_loss(model(x), y)
        loss.backward()
        mid = time.process_time()
        opt.step()
        in_step += time.process_time() - mid
        opt.zero_grad(set_to_none=True)
        sched.step()
        total += time.process_time() - start
    return total / steps, in_step / steps


def full_step_table(workload: str, presets: list[str], steps: int, rounds: int) -> dict[str, Any]:
    """Per preset: median over rounds of (step ms, opt.step ms, step / AdamW's step)."""
    spec = get_workload(workload)
    cache_dir = get_settings().cache_dir
    assert cache_dir is not None
    data = load_data(spec, 0, cache_dir)
    names = ["adamw", *[p for p in presets if p != "adamw"]]
    per: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            model = build_model(spec.model, seed=0)
            per[name].append(
                timed_loop(model, optim_core.build(recipe_of(name), model), data, steps)
            )
    rows = []
    for name in names:
        ratios = [t[0] / a[0] for t, a in zip(per[name], per["adamw"], strict=True)]
        rows.append(
            {
                "recipe": name,
                "step_ms": 1e3 * statistics.median(t[0] for t in per[name]),
                "opt_step_ms": 1e3 * statistics.median(t[1] for t in per[name]),
                "vs_adamw": statistics.median(ratios),
            }
        )
    return {"workload": workload, "steps": steps, "rounds": rounds, "rows": rows}


def _print_full_step(result: dict[str, Any]) -> None:
    print("| recipe | full step ms (CPU) | opt.step() ms | full step × AdamW's |")
    print("|---|---:|---:|---:|")
    for row in result["rows"]:
        print(
            f"| {row['recipe']} | {row['step_ms']:.1f} | {row['opt_step_ms']:.1f} "
            f"| {row['vs_adamw']:.2f} |"
        )


def run_full_step(args: argparse.Namespace) -> None:
    """``--full-step``: print the table and write the JSON to ``--out``."""
    result = full_step_table(args.workload, args.full_step.split(","), args.steps, args.rounds)
    result.update(threads=torch.get_num_threads(), loadavg_1m=os.getloadavg()[0])
    result["torch"] = torch.__version__
    print(f"{args.workload}, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}")
    _print_full_step(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


def bare_loop(
    model: torch.nn.Module, opt: torch.optim.Optimizer, data: Batches, steps: int, device: str
) -> tuple[float, float]:
    """The reference: nothing but forward, backward, step, schedule. Returns (wall, cpu) s."""
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps))
    cuda = device.startswith("cuda")
    start, cpu = time.perf_counter(), time.process_time()
    for step in range(steps):
        x, y = (t.to(device) for t in data.train_batch(step))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = lm_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu


class _OneValBatch(Batches):
    """The workload's data with a single held-out batch, so train()'s one final evaluation
    costs about a third of a step and the comparison measures the loop itself."""

    def __init__(self, data: Batches) -> None:
        self.data = data
        self.tokens_per_batch = data.tokens_per_batch

    def train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.train_batch(step)

    def val_batches(self, final: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.data.val_batches(final)[:1]


def _timed_bare(
    spec: WorkloadSpec,
    recipe: optim_core.Recipe,
    data: Batches,
    steps: int,
    lr: float | None,
    device: str,
) -> tuple[float, float]:
    """A fresh model through ``bare_loop``: (wall, cpu) s."""
    model = build_model(spec.model, seed=0).to(device)
    return bare_loop(model, optim_core.build(recipe, model, lr=lr), data, steps, device)


def _timed_train(
    spec: WorkloadSpec,
    recipe: optim_core.Recipe,
    data: Batches,
    steps: int,
    lr: float | None,
    device: str,
) -> tuple[TrainResult, float, float]:
    """A fresh model through ``train()``: (result, wall s, cpu s) of the whole call."""
    model = build_model(spec.model, seed=0).to(device)
    cfg = TrainConfig(steps=steps, eval_every=steps, target_loss=spec.target_loss, device=device)
    start, cpu = time.perf_counter(), time.process_time()
    res = train(model, optim_core.build(recipe, model, lr=lr), data, cfg)
    return res, time.perf_counter() - start, time.process_time() - cpu


def one_round(
    workload: str,
    preset: str,
    steps: int,
    lr: float | None,
    bare_first: bool = True,
    device: str = "cpu",
) -> dict[str, float]:
    spec = get_workload(workload)
    cache_dir = get_settings().cache_dir
    assert cache_dir is not None
    data = _OneValBatch(load_data(spec, 0, cache_dir))
    recipe = optim_core.presets.get(preset)
    tokens = steps * data.tokens_per_batch
    if bare_first:
        bare_s, bare_cpu = _timed_bare(spec, recipe, data, steps, lr, device)
        res, wall, train_cpu = _timed_train(spec, recipe, data, steps, lr, device)
    else:
        res, wall, train_cpu = _timed_train(spec, recipe, data, steps, lr, device)
        bare_s, bare_cpu = _timed_bare(spec, recipe, data, steps, lr, device)
    return {
        "bare_tokens_per_s": tokens / bare_s,
        "train_tokens_per_s": res.tokens_per_s,
        "train_wall_tokens_per_s": tokens / wall,
        "bare_tokens_per_cpu_s": tokens / bare_cpu,
        "train_tokens_per_cpu_s": tokens / train_cpu,  # whole call, final eval included
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="synthetic-lm")
    parser.add_argument("--preset", default="adamw")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda (bf16 autocast on cuda)")
    parser.add_argument(
        "--full-step",
        default="",
        help="comma-separated presets (and trial-28): full training step vs AdamW's",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/trainer_overhead.json"))
    return parser


def _ratio_of(rounds: list[dict[str, float]], num: str, den: str) -> float:
    """Median over rounds of the per-round ratio."""
    return statistics.median(r[num] / r[den] for r in rounds)


def _report(args: argparse.Namespace, rounds: list[dict[str, float]]) -> dict[str, Any]:
    """The JSON report: every round, the medians and the three train/bare ratios."""
    return {
        "workload": args.workload,
        "preset": args.preset,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "steps": args.steps,
        "rounds": rounds,
        "median": {k: statistics.median(r[k] for r in rounds) for k in rounds[0]},
        "ratio": _ratio_of(rounds, "train_tokens_per_s", "bare_tokens_per_s"),
        "wall_ratio": _ratio_of(rounds, "train_wall_tokens_per_s", "bare_tokens_per_s"),
        "cpu_ratio": _ratio_of(rounds, "train_tokens_per_cpu_s", "bare_tokens_per_cpu_s"),
        "target": 0.95,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
    }


def _print_report(args: argparse.Namespace, report: dict[str, Any]) -> None:
    med, ratio, wall_ratio = report["median"], report["ratio"], report["wall_ratio"]
    cpu_ratio = report["cpu_ratio"]
    print(
        f"{args.workload} / {args.preset}, {args.steps} steps x {args.rounds} rounds, "
        f"threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'loop':<28}{'tokens/s (median)':>20}{'x bare':>10}")
    print(f"{'bare 10-line loop':<28}{med['bare_tokens_per_s']:>20,.0f}{1.0:>10.3f}")
    print(f"{'train() (reported)':<28}{med['train_tokens_per_s']:>20,.0f}{ratio:>10.3f}")
    print(
        f"{'train() (wall, +1 eval)':<28}{med['train_wall_tokens_per_s']:>20,.0f}{wall_ratio:>10.3f}"
    )
    print(f"{'bare (per CPU second)':<28}{med['bare_tokens_per_cpu_s']:>20,.0f}{1.0:>10.3f}")
    print(
        f"{'train() (per CPU second)':<28}{med['train_tokens_per_cpu_s']:>20,.0f}{cpu_ratio:>10.3f}"
    )
    print("(x bare = median over rounds of the per-round ratio)")
    print(
        f"target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'} (wall), "
        f"{'met' if cpu_ratio >= 0.95 else 'NOT met'} (CPU time)"
    )


def main() -> None:
    args = _parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.full_step:
        run_full_step(args)
        return
    one_round(args.workload, args.preset, min(args.steps, 10), args.lr, device=args.device)
    rounds = [  # alternate which loop goes first, so neither always runs on a warm cache
        one_round(args.workload, args.preset, args.steps, args.lr, r % 2 == 0, args.device)
        for r in range(args.rounds)
    ]
    report = _report(args, rounds)
    _print_report(args, report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
