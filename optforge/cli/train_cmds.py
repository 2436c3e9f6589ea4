"""CLI commands: ``optforge run``, ``optforge compare`` and ``optforge workloads``.

Local training runs, no service needed. Heavy imports (torch, optim_core, workers, matplotlib)
happen inside the commands; the shared pieces (progress bar, tables, the comparison loop that
``optforge demo`` reuses) are in ``optforge.cli.train_common``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from optforge.cli.train_common import (
    fail,
    load_recipe,
    recipe_label,
    result_json,
    result_table,
    run_comparison,
    setup_torch,
    stderr_console,
    train_with_progress,
)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("run")(run_cmd)
    app.command("compare")(compare_cmd)
    app.command("workloads")(workloads_cmd)


# --------------------------------------------------------------------------------------------
# optforge run
# --------------------------------------------------------------------------------------------


def run_cmd(
    preset: str = typer.Option("sinkgd", help="preset name (see docs/recipes.md)"),
    recipe: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="recipe YAML/JSON file"
    ),
    workload: str = typer.Option("shakespeare-lm", help="workload name (optforge workloads)"),
    steps: int | None = typer.Option(
        None, min=1, help="optimizer steps (default: the workload's)"
    ),
    seed: int = typer.Option(0, help="seed of init and data order"),
    lr: float | None = typer.Option(None, help="peak lr (default: the recipe's)"),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda if available)"),
    data: Path | None = typer.Option(None, help="directory with train.bin/val.bin (tokens-lm*)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Train one seeded run of a recipe on a workload, with a progress bar and a result table."""
    from core.workloads import get_workload
    from workers.data import DataUnavailableError
    from workers.train import run_workload

    try:
        spec = get_workload(workload)
        rec = load_recipe(preset, recipe)
    except ValueError as exc:
        raise fail(str(exc)) from None
    setup_torch()
    n_steps = steps or spec.default_steps
    label = recipe_label(rec, recipe.stem if recipe else preset)
    console = stderr_console()
    try:
        result = train_with_progress(
            console,
            f"{label} on {workload}",
            lambda cb: run_workload(workload, rec, n_steps, seed, lr, device, cb, data_path=data),
            n_steps,
        )
    except DataUnavailableError as exc:
        raise fail(str(exc)) from None
    if as_json:
        extra = {"workload": workload, "recipe": label, "seed": seed, "lr": lr}
        typer.echo(json.dumps(result_json(result, **extra)))
    else:
        from rich.console import Console

        Console().print(result_table(result, f"{label} on {workload}, seed {seed}"))


def compare_cmd(
    presets: str = typer.Option("adamw,sinkgd,scale", help="comma-separated preset names"),
    workload: str = typer.Option("shakespeare-lm", help="workload name"),
    seeds: int = typer.Option(3, min=1, help="seeds 0..N-1 per preset"),
    steps: int | None = typer.Option(None, min=1, help="steps (default: the workload's)"),
    lr: float | None = typer.Option(None, help="peak lr for all (default: each recipe's)"),
    device: str | None = typer.Option(None, help="cpu | cuda"),
    out: Path = typer.Option(Path("compare.png"), help="loss-curve PNG"),
) -> None:
    """Train several presets over seeds; print a ranked table (mean ± std) and plot the curves."""
    names = [p.strip() for p in presets.split(",") if p.strip()]
    run_comparison(names, workload, seeds, steps, lr, out, device)


# --------------------------------------------------------------------------------------------
# optforge workloads
# --------------------------------------------------------------------------------------------


def workloads_cmd() -> None:
    """List the workloads with model size, batch, default steps and expected CPU time."""
    from rich.console import Console
    from rich.table import Table

    from core.workloads import WORKLOADS

    table = Table(title="workloads")
    for col in (
        "name",
        "kind",
        "params",
        "batch x seq",
        "steps",
        "lr",
        "CPU time (2 cores)",
        "description",
    ):
        table.add_column(col, justify="right" if col in {"params", "steps", "lr"} else "left")
    for spec in WORKLOADS.values():
        cpu = spec.expected_cpu_s
        table.add_row(
            spec.name,
            spec.kind,
            f"{spec.n_params / 1e6:.2f}M",
            f"{spec.batch_size} x {spec.seq_len}",
            str(spec.default_steps),
            f"{spec.default_lr:g}",
            "GPU" if cpu is None else f"~{cpu:.1f} s" if cpu < 10 else f"~{cpu:.0f} s",
            spec.description,
        )
    Console().print(table)
