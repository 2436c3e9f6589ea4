"""Benchmark (not a test): search the default design space on shakespeare-lm, compare to AdamW.

Trains AdamW at each lr of ``--adamw-lrs`` (same workload, steps and seed; ``--parallel`` local
processes), then runs a study of ``--trials`` trials of the shipped default space on the embedded
default (CPU, ``--parallel`` local worker processes, the same scheduler path as
``optforge search``), and writes ``docs/search-results.md``: the Pareto front, AdamW's val loss
at its best lr, and the best recipe with <= 25 % (and <= 10 %) of AdamW's state bytes per
parameter with its loss relative to AdamW.

    OPTFORGE_DATA_DIR=/tmp/ofbench OPTFORGE_TORCH_THREADS=1 .venv/bin/python \
        bench/search_result.py --trials 30 --steps 120 --parallel 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any


def _adamw_run(workload: str, steps: int, seed: int, lr: float, threads: int) -> dict[str, Any]:
    import torch

    import optim_core
    from workers.train import run_workload

    torch.set_num_threads(threads)
    res = run_workload(workload, optim_core.presets.get("adamw", lr=lr), steps, seed, lr)
    return {
        "lr": lr,
        "status": res.status,
        "val_loss": res.final_val_loss,
        "state_bytes_per_param": res.state_bytes_per_param,
        "wall_s": res.wall_s,
    }


def adamw_baseline(
    workload: str, steps: int, seed: int, lrs: list[float], parallel: int, threads: int
) -> dict[str, Any]:
    """AdamW's final val loss per lr (same workload/steps/seed); returns the best."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=parallel, mp_context=ctx) as pool:
        futures = [pool.submit(_adamw_run, workload, steps, seed, lr, threads) for lr in lrs]
        results = [f.result() for f in futures]
    ok = [r for r in results if r["val_loss"] is not None and r["status"] == "succeeded"]
    best = min(ok, key=lambda r: r["val_loss"])
    return {"best": best, "sweep": results}


def best_under(front: list[dict[str, Any]], budget: float) -> dict[str, Any] | None:
    """Lowest-loss trial whose state bytes/param (objective 2) is <= ``budget``."""
    fits = [t for t in front if t["values"][1] <= budget]
    return min(fits, key=lambda t: t["values"][0]) if fits else None


def _recipe_words(trial: dict[str, Any]) -> str:
    recipe = trial.get("recipe") or {}
    d = recipe.get("design", {})
    mom = d.get("momentum") or {}
    placement = mom.get("placement", "none")
    momentum = str(placement)
    if placement != "none":
        momentum += f"(β={mom.get('beta', 0):.3g}, {mom.get('position')}"
        momentum += ", nesterov)" if mom.get("nesterov") else ")"
    rank = str(d.get("rank"))
    if d.get("rank") is not None:
        proj = d.get("projection") or {}
        rank += f"({proj.get('basis')}, refresh {proj.get('refresh')}, {proj.get('complement')})"
    parts = [
        "norms=" + (">".join(d.get("norms", [])) or "-"),
        "momentum=" + momentum,
        "rank=" + rank,
        f"bits={d.get('state_bits')}",
        f"lr={recipe.get('lr', 0):.3g}",
        f"wd={recipe.get('weight_decay')}",
    ]
    return ", ".join(parts)


def render(detail: dict[str, Any], adamw: dict[str, Any], command: str, wall_s: float) -> str:
    """The markdown report."""
    base = adamw["best"]
    lines = [
        "# Search result: default space on " + detail["workload"],
        "",
        f"Command: `{command}`  ",
        f"Study {detail['id']}: {detail['progress']['asked']} trials, {detail['steps']} steps, "
        f"sampler {detail['sampler']} seed {detail['seed']}; wall {wall_s / 60:.1f} min; "
        f"progress {detail['progress']}.",
        "",
        f"AdamW (same steps and seed) at its best lr {base['lr']:g}: val loss "
        f"**{base['val_loss']:.4f}**, {base['state_bytes_per_param']:.2f} state bytes/param. "
        "Sweep: " + ", ".join(f"lr {r['lr']:g} → {r['val_loss']}" for r in adamw["sweep"]) + ".",
        "",
        "## Pareto front (val loss vs optimizer-state bytes per parameter)",
        "",
        "| trial | val loss | state B/param | vs AdamW loss | recipe |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in detail["pareto_front"]:
        rel = t["values"][0] / base["val_loss"] - 1
        lines.append(
            f"| {t['number']} | {t['values'][0]:.4f} | {t['values'][1]:.3f} | {rel:+.1%} | "
            f"{_recipe_words(t)} |"
        )
    for frac in (0.25, 0.10):
        pick = best_under(detail["pareto_front"], frac * base["state_bytes_per_param"])
        lines += ["", f"## Best recipe with <= {frac:.0%} of AdamW's state bytes", ""]
        if pick is None:
            lines.append("None found in this study.")
            continue
        rel = pick["values"][0] / base["val_loss"] - 1
        lines.append(
            f"Trial {pick['number']}: val loss {pick['values'][0]:.4f} ({rel:+.2%} vs AdamW), "
            f"{pick['values'][1]:.3f} B/param "
            f"({pick['values'][1] / base['state_bytes_per_param']:.1%} of AdamW): "
            f"{_recipe_words(pick)}."
        )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="shakespeare-lm")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adamw-lrs", default="0.001,0.003,0.006,0.01")
    parser.add_argument("--out", type=Path, default=Path("docs/search-results.md"))
    return parser


def _run_study(args: argparse.Namespace, t0: float) -> dict[str, Any]:
    """Create the study of the default space and run it with local workers; its detail."""
    from core.db import session_scope
    from optforge.cli.search_cmds import _progress_line, run_local_study
    from search.scheduler import StudySpec, create_study

    spec = StudySpec(
        workload=args.workload,
        steps=args.steps,
        n_trials=args.trials,
        parallelism=args.parallel,
        seed=args.seed,
        seeds=[args.seed],
    )
    with session_scope() as s:
        study_id = create_study(s, spec).id
    return run_local_study(
        study_id,
        args.parallel,
        on_progress=lambda d: print(f"{time.time() - t0:.0f}s", _progress_line(d), flush=True),
    )


def main() -> None:
    args = _parser().parse_args()

    from core.config import get_settings
    from migrations.runner import upgrade

    upgrade()
    t0 = time.time()
    threads = get_settings().torch_threads or 1
    lrs = [float(x) for x in args.adamw_lrs.split(",")]
    adamw = adamw_baseline(args.workload, args.steps, args.seed, lrs, args.parallel, threads)
    print("AdamW:", adamw, f"({time.time() - t0:.0f} s)", flush=True)
    detail = _run_study(args, t0)
    command = "bench/search_result.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
    )
    args.out.write_text(render(detail, adamw, command, time.time() - t0))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
