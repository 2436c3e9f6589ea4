"""CLI command: ``optforge demo`` (what ``make demo`` runs).

A short comparison of a few presets on the default workload through the service's own code
path on the embedded default: the experiment and its runs become rows in the SQLite database,
each run is claimed and trained by the worker's task body (``workers.tasks.execute_run``), and
the leaderboard is the API's (``records.leaderboard``). So ``optforge up`` afterwards shows the
same results on the web page, and a second ``optforge demo`` reuses them instead of retraining.
"""

from __future__ import annotations

import threading
from typing import Any

import typer

DEMO_PRESETS = ("adamw", "sinkgd", "scale", "lion")
DEMO_STEPS = 200


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("demo")(demo_cmd)


def demo_cmd(
    workload: str = typer.Option("shakespeare-lm", help="workload name"),
    steps: int = typer.Option(DEMO_STEPS, min=1, help="steps per run"),
    seeds: int = typer.Option(1, min=1, help="seeds per preset"),
    presets: str = typer.Option(",".join(DEMO_PRESETS), help="comma-separated preset names"),
) -> None:
    """Compare a few optimizers on the default workload and print the leaderboard."""
    from core.config import get_settings
    from migrations.runner import upgrade
    from optforge.cli.train_common import setup_torch, stderr_console

    settings = get_settings()
    settings.ensure_dirs()
    upgrade()
    setup_torch()
    names = [p.strip() for p in presets.split(",") if p.strip()]
    exp_id, run_ids = _submit(names, workload, steps, seeds)
    console = stderr_console()
    console.print(
        f"demo: experiment {exp_id} on {workload}: {len(names)} presets x {seeds} seed(s), "
        f"{steps} steps; {len(run_ids)} run(s) to train (the rest reuse stored results)"
    )
    for i, run_id in enumerate(run_ids, 1):
        _train_one(console, run_id, f"run {run_id} ({i}/{len(run_ids)})", steps)
    typer.echo(_board_text(workload, steps))
    typer.echo(f"data in {settings.data_dir}")
    typer.echo(f"to browse: {optforge_command()} up  (then open {settings.public_url}/)")


def optforge_command() -> str:
    """The full path of this ``optforge`` (the venv's, even when it is not on PATH)."""
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "optforge"
    if beside.is_file():
        return str(beside)
    found = shutil.which("optforge")
    return found or f"{sys.executable} -c 'from optforge.cli import main; main()'"


def _submit(names: list[str], workload: str, steps: int, seeds: int) -> tuple[int, list[int]]:
    """Validate like the API (a mistake is one line, exit 2), insert the experiment and its
    runs (committed, origin "demo") and return (experiment id, run ids still to train)."""
    from optforge.cli.local_runs import record, validated

    body = {"recipes": names, "workload": workload, "steps": steps, "seeds": list(range(seeds))}
    spec, _ = validated(body, {"recipes": "--presets"})
    exp_id, _, to_train = record(spec, origin="demo")
    return exp_id, to_train


def _train_one(console: Any, run_id: int, label: str, steps: int) -> None:
    """Train one run through the worker's task body, with a progress bar read from its curve."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from workers.tasks import execute_run

    done = threading.Event()
    outcome: list[str] = []

    def work() -> None:
        try:
            outcome.append(execute_run(run_id, owner="optforge-demo"))
        finally:
            done.set()

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(label, total=steps, loss="-")
        thread = threading.Thread(target=work, name=f"demo-run-{run_id}", daemon=True)
        thread.start()
        while not done.wait(0.5):
            step, loss = _last_point(run_id)
            progress.update(task, completed=step, loss=loss)
        thread.join()
        step, loss = _last_point(run_id)
        progress.update(task, completed=steps if outcome == ["succeeded"] else step, loss=loss)
    console.print(f"  run {run_id}: {outcome[0] if outcome else 'error'}")


def _last_point(run_id: int) -> tuple[int, str]:
    """(step, loss text) of the newest stored curve point of a run."""
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import RunMetric

    with session_scope() as session:
        row = session.execute(
            select(RunMetric.step, RunMetric.train_loss, RunMetric.val_loss)
            .where(RunMetric.run_id == run_id)
            .order_by(RunMetric.step.desc())
            .limit(1)
        ).first()
    if row is None:
        return 0, "-"
    loss = row.val_loss if row.val_loss is not None else row.train_loss
    return int(row.step), "-" if loss is None else f"{loss:.3f}"


def _board_text(workload: str, steps: int) -> str:
    """The leaderboard of ``workload`` at ``steps`` as a rendered rich table."""
    from rich.console import Console
    from rich.table import Table

    from core.db import session_scope
    from records.leaderboard import leaderboard

    with session_scope() as session:
        board = leaderboard(session, workload, steps, limit=50)
    table = Table(title=f"leaderboard: {workload}, {steps} steps (val loss, lower is better)")
    for col in ("rank", "recipe", "val loss", "state B/param", "tokens/s", "runs", "pareto"):
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for rank, row in enumerate(board["rows"], 1):
        table.add_row(
            str(rank),
            f"{row['name']} ({row['recipe_hash'][:8]})",
            _pm(row["val_loss_mean"], row["val_loss_std"], row["n_runs"]),
            _num(row["state_bytes_per_param"], ".2f"),
            _num(row["tokens_per_s"], ",.0f"),
            str(row["n_runs"]),
            "*" if row["pareto"] else "",
        )
    console = Console(width=110, record=True)
    with console.capture() as capture:
        console.print(table)
    return capture.get()


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pm(mean: float | None, std: float | None, n: int) -> str:
    """Mean ± std over seeds; one seed has no spread, so no ``± 0``."""
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {std or 0.0:.4f}" if n > 1 else f"{mean:.4f}"
