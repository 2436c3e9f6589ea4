"""Benchmark (not a test): search the default design space on shakespeare-lm, compare to AdamW.

Runs a study of ``--trials`` trials of the shipped default space on the embedded default (CPU,
``--parallel`` local worker processes, the same scheduler path as ``optforge search``), then
trains AdamW at each lr of ``--adamw-lrs`` for the same steps and seed, and writes
``docs/search_results.md``: the Pareto front, AdamW's val loss at its best lr, and the best
recipe with <= 25 % (and <= 10 %) of AdamW's state bytes per parameter with its loss relative
to AdamW.

    OPTFORGE_DATA_DIR=/tmp/ofbench .venv/bin/python bench/search_result.py \
        --trials 30 --steps 150 --parallel 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def adamw_baseline(workload: str, steps: int, seed: int, lrs: list[float]) -> dict[str, Any]:
    """AdamW's final val loss per lr (same workload/steps/seed); returns the best."""
    from workers.train import run_workload  # type: ignore[import-not-found]

    import optim_core

    results = []
    for lr in lrs:
        res = run_workload(workload, optim_core.presets.get("adamw", lr=lr), steps, seed, lr)
        results.append(
            {
                "lr": lr,
                "status": res.status,
                "val_loss": res.final_val_loss,
                "state_bytes_per_param": res.state_bytes_per_param,
            }
        )
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
    parts = [
        "norms=" + (">".join(d.get("norms", [])) or "-"),
        "momentum="
        + str(mom.get("placement"))
        + (f"(β={mom['beta']:.3g})" if "beta" in mom else ""),
        f"rank={d.get('rank')}",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="shakespeare-lm")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adamw-lrs", default="0.001,0.003,0.01")
    parser.add_argument("--out", type=Path, default=Path("docs/search_results.md"))
    args = parser.parse_args()

    from core.db import get_engine, session_scope
    from core.models import Base
    from optforge.cli.search_cmds import _progress_line, run_local_study
    from search.scheduler import StudySpec, create_study

    Base.metadata.create_all(get_engine())
    t0 = time.time()
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
    detail = run_local_study(
        study_id, args.parallel, on_progress=lambda d: print(_progress_line(d), flush=True)
    )
    lrs = [float(x) for x in args.adamw_lrs.split(",")]
    adamw = adamw_baseline(args.workload, args.steps, args.seed, lrs)
    command = "bench/search_result.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
    )
    args.out.write_text(render(detail, adamw, command, time.time() - t0))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
