"""CLI commands: ``optforge run``, ``optforge compare`` and ``optforge workloads``.

Local training runs, no service needed. Heavy imports (torch, optim_core, workers, matplotlib)
happen inside the commands; the shared pieces (progress bar, tables, the comparison loop that
``optforge demo`` reuses) are in ``optforge.cli.train_common``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from optforge.cli.local_runs import (
    check_device,
    fail,
    page_url,
    preflight_data,
    queue_for,
    recipe_ref,
    record,
    run_record,
    train_recorded,
    validated,
)
from optforge.cli.train_common import (
    json_keys,
    result_json,
    result_table,
    run_comparison,
    setup_torch,
    stderr_console,
    train_with_progress,
)
from workers.train_types import RankJob


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
    recipe: Path | None = typer.Option(None, dir_okay=False, help="recipe YAML/JSON file"),
    workload: str = typer.Option("shakespeare-lm", help="workload name (optforge workloads)"),
    steps: int | None = typer.Option(None, help="optimizer steps (default: the workload's)"),
    seed: int = typer.Option(0, help="seed of init and data order"),
    lr: float | None = typer.Option(None, help="peak lr (default: the recipe's)"),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda if available)"),
    data: Path | None = typer.Option(None, help="directory with train.bin/val.bin (tokens-lm*)"),
    as_json: bool = typer.Option(
        False, "--json", metavar="", help="print one JSON object on stdout"
    ),
    no_record: bool = typer.Option(
        False, "--no-record", metavar="", help="do not record the run in the database"
    ),
    gpus: int = typer.Option(1, help="processes under torchrun: GPUs, or gloo ranks on CPU"),
    parallel: str | None = typer.Option(None, help="ddp | fsdp (default fsdp when --gpus > 1)"),
) -> None:
    """Train one seeded run of a recipe on a workload, with a progress bar and a result table.

    The run is recorded in the embedded default's database (leaderboard, web pages), and an
    identical run that already succeeded is reused; --no-record trains without recording.
    With --gpus N the run is N processes under torchrun (docs/distributed.md).
    """
    ref = recipe_ref(preset, recipe)
    dev = check_device(device)
    body = {"recipes": [ref], "workload": workload, "steps": steps, "seeds": [seed], "lr": lr,
            "queue": queue_for(dev), "gpus": gpus, "parallel": parallel}  # fmt: skip
    spec, plan = validated(body, {"seeds": "--seed", "gpus": "--gpus", "parallel": "--parallel"})
    setup_torch()
    preflight_data(plan.workload, data)
    label = plan.recipes[0][0] or (recipe.stem if recipe else preset)
    console = stderr_console()
    if no_record:
        out = _train_unrecorded(console, _job(spec, plan, dev, data), label)
    else:
        out = _train_one_recorded(console, spec, label, plan.steps, dev, data)
    if as_json:
        out.update(workload=plan.workload, recipe=label, seed=seed, lr=plan.runs[0].lr)
    _print_result(out, f"{label} on {plan.workload}, seed {seed}", as_json)


def _job(spec: Any, plan: Any, device: str | None, data: Path | None) -> RankJob:
    """The one run of a validated ``optforge run`` (the same job, 1 process or torchrun's N)."""
    from workers.train import default_device  # torch: the CLI starts without it

    gpus, parallel = spec.layout()
    run = plan.runs[0]
    return RankJob(
        workload=plan.workload,
        recipe=plan.recipes[0][1],
        steps=plan.steps,
        seed=run.seed,
        lr=run.lr,
        warmup_frac=None,
        device=device or default_device(),
        parallel=parallel,
        world_size=gpus,
        data_path=str(data) if data else None,
    )


def _print_result(out: dict[str, Any], title: str, as_json: bool) -> None:
    """One JSON object on stdout, or the result table and the run page's URL."""
    if as_json:
        typer.echo(json.dumps(out, default=str))
        return
    from rich.console import Console

    Console().print(result_table(out, title))
    if out.get("id"):
        typer.echo(f"run {out['id']}: {page_url('/runs/' + str(out['id']))}")


def _train_unrecorded(console: Any, job: RankJob, label: str) -> dict[str, Any]:
    from workers.data import DataUnavailableError
    from workers.launch import run_distributed
    from workers.train import run_workload

    def one(cb: Any) -> Any:
        if job.world_size > 1:
            return run_distributed(job, cb)
        return run_workload(job.workload, job.recipe, job.steps, job.seed, job.lr, job.device,
                            cb, data_path=job.data_path)  # fmt: skip

    try:
        result = train_with_progress(console, f"{label} on {job.workload}", one, job.steps or 1)
    except DataUnavailableError as exc:
        raise fail(str(exc)) from None
    return result_json(result)


def _train_one_recorded(
    console: Any, spec: Any, label: str, steps: int, device: str | None, data: Path | None
) -> dict[str, Any]:
    exp_id, run_ids, to_train = record(spec)
    run_id = run_ids[0]
    if not to_train:
        out = run_record(run_id)
        console.print(
            f"run {run_id} reuses run {out['reused_from_id']} (identical recipe, workload, "
            "steps, seed and lr already succeeded); --no-record trains it again"
        )
        return _json_view(out)
    out = train_recorded(console, run_id, f"{label} (run {run_id})", steps, device=device,
                         data_path=data)  # fmt: skip
    if out["status"] == "failed":
        raise fail(f"run {run_id} failed: {(out.get('failure_reason') or '').splitlines()[0]}")
    return _json_view(out)


def _json_view(row: dict[str, Any]) -> dict[str, Any]:
    keep = (*json_keys(), "id", "experiment_id", "reused_from_id")
    return {k: row.get(k) for k in keep}


def compare_cmd(
    presets: str = typer.Option("adamw,sinkgd,scale", help="comma-separated preset names"),
    workload: str = typer.Option("shakespeare-lm", help="workload name"),
    seeds: int = typer.Option(3, help="seeds 0..N-1 per preset"),
    steps: int | None = typer.Option(None, help="steps (default: the workload's)"),
    lr: float | None = typer.Option(None, help="peak lr for all (default: each recipe's)"),
    device: str | None = typer.Option(None, help="cpu | cuda"),
    out: Path = typer.Option(Path("compare.png"), help="loss-curve PNG"),
    no_record: bool = typer.Option(
        False, "--no-record", metavar="", help="do not record the runs in the database"
    ),
) -> None:
    """Train several presets over seeds; print a ranked table (mean ± std) and plot the curves.

    The runs are recorded as one experiment (leaderboard, web pages; stored identical runs are
    reused); --no-record trains without recording.
    """
    names = [p.strip() for p in presets.split(",") if p.strip()]
    dev = check_device(device)
    body = {"recipes": names, "workload": workload, "steps": steps, "lr": lr,
            "seeds": list(range(seeds)), "queue": queue_for(dev)}  # fmt: skip
    spec, plan = validated(body)
    preflight_data(plan.workload)
    run_comparison(spec, plan, out, dev, record_runs=not no_record)


# --------------------------------------------------------------------------------------------
# optforge workloads
# --------------------------------------------------------------------------------------------


STARTUP_S = "10-20"  # importing torch and the trainer, measured on the shared 2-core VM


def workloads_cmd() -> None:
    """List the workloads with model size, batch, default steps and expected CPU time."""
    from rich.console import Console
    from rich.table import Table

    import optim_core
    from core.workloads import WORKLOADS

    table = Table(title="workloads")
    for col in ("name", "kind", "params", "batch x seq", "steps (max)", "CPU time", "about"):
        table.add_column(col, justify="right" if col in {"params", "steps (max)"} else "left")
    for spec in WORKLOADS.values():
        table.add_row(
            spec.name,
            spec.kind,
            f"{spec.n_params / 1e6:.2f}M",
            f"{spec.batch_size} x {spec.seq_len}",
            f"{spec.default_steps} ({spec.max_steps})",
            cpu_time(spec.expected_cpu_s),
            spec.description.split(". ")[0].rstrip("."),
        )
    Console().print(table)
    lrs = ", ".join(f"{n} {optim_core.presets.get(n).lr:g}" for n in ("adamw", "sinkgd", "lion"))
    typer.echo(
        f"lr: every run uses its recipe's lr ({lrs}, ...); --lr overrides it.\n"
        "CPU time: the trainer's wall time for the default steps (evaluations included) with "
        "1 torch thread, measured as wall_s of `OPTFORGE_TORCH_THREADS=1 optforge run "
        "--workload W --no-record --json` on an idle 2-core VM (AMD EPYC, load < 1.1); add "
        f"{STARTUP_S} s to start Python and torch. Several runs at once share the cores."
    )


def cpu_time(seconds: float | None) -> str:
    if seconds is None:
        return "GPU"
    return f"~{seconds:.1f} s" if seconds < 10 else f"~{seconds:.0f} s"
