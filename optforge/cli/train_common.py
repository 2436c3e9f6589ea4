"""Helpers of the training commands (``run``, ``compare``, ``demo``): progress bar, result and
leaderboard tables, the comparison loop and the loss-curve plot. Heavy imports stay inside."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from workers.train import Callbacks, MetricPoint, TrainResult

JSON_KEYS = (
    "status",
    "final_val_loss",
    "steps",
    "stopped_step",
    "steps_to_target",
    "target_loss",
    "tokens_per_s",
    "wall_s",
    "state_bytes",
    "n_params",
    "state_bytes_per_param",
    "peak_mem_bytes",
    "curve",
    "env",
)


# --------------------------------------------------------------------------------------------
# helpers shared by run / compare / demo
# --------------------------------------------------------------------------------------------


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def setup_torch() -> None:
    """Apply ``settings.torch_threads`` (the one place the CLI configures torch)."""
    import torch

    from core.config import get_settings

    threads = get_settings().torch_threads
    if threads:
        torch.set_num_threads(threads)


def load_recipe(preset: str | None, recipe_file: Path | None) -> Any:
    """The recipe from ``--recipe file.yaml`` (or .json), else the preset (default adamw)."""
    import optim_core

    if recipe_file is not None:
        text = recipe_file.read_text()
        if recipe_file.suffix == ".json":
            return optim_core.Recipe.model_validate(json.loads(text))
        return optim_core.Recipe.from_yaml(text)
    return optim_core.presets.get(preset or "adamw")


def recipe_label(recipe: Any, fallback: str) -> str:
    return str(getattr(recipe, "name", None) or fallback)


def train_with_progress(
    console: Console,
    label: str,
    run: Callable[[Any], TrainResult],
    steps: int,
) -> TrainResult:
    """Call ``run(callbacks)`` under a rich progress bar (step, loss, tokens/s, ETA)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from workers.train import Callbacks

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  {task.fields[tps]} tok/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=steps, loss="-", tps="-")

        def on_step(point: MetricPoint) -> None:
            loss = point.val_loss if point.val_loss is not None else point.train_loss
            tps = point.tokens / point.elapsed_s if point.elapsed_s > 0 else 0.0
            progress.update(task, completed=point.step, loss=f"{loss:.3f}", tps=f"{tps:,.0f}")

        return run(Callbacks(on_step=on_step))


def result_json(result: TrainResult, **extra: Any) -> dict[str, Any]:
    data = result.to_dict()
    out = {k: data[k] for k in JSON_KEYS}
    out.update(extra)
    return out


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def result_table(result: TrainResult, title: str) -> Table:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    rows = [
        ("status", result.status),
        ("final val loss", _fmt(result.final_val_loss)),
        (
            "steps",
            f"{result.steps}"
            + (f" (stopped at {result.stopped_step})" if result.stopped_step else ""),
        ),
        (
            "steps to target",
            f"{_fmt(result.target_loss, '.2f')}: {result.steps_to_target or 'not reached'}",
        ),
        ("tokens/s", f"{result.tokens_per_s:,.0f}"),
        ("wall time", f"{result.wall_s:.1f} s"),
        (
            "optimizer state",
            f"{result.state_bytes:,} B ({result.state_bytes_per_param:.2f} B/param)",
        ),
        ("params", f"{result.n_params:,}"),
        ("peak memory", f"{result.peak_mem_bytes / 2**20:,.0f} MiB"),
        (
            "env",
            f"{result.env.get('device_name')} torch {result.env.get('torch')} threads {result.env.get('threads')}",
        ),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


# --------------------------------------------------------------------------------------------
# optforge compare (and demo)
# --------------------------------------------------------------------------------------------


@dataclass
class CompareRow:
    """Results of one recipe over several seeds."""

    label: str
    results: list[TrainResult] = field(default_factory=list)

    @property
    def finals(self) -> list[float]:
        return [
            r.final_val_loss
            for r in self.results
            if r.final_val_loss is not None and r.status == "succeeded"
        ]

    @property
    def mean(self) -> float:
        ok = self.finals
        return statistics.fmean(ok) if len(ok) == len(self.results) and ok else math.inf

    @property
    def std(self) -> float:
        ok = self.finals
        return statistics.stdev(ok) if len(ok) > 1 else 0.0


def compare_recipes(
    recipes: Sequence[tuple[str, Any]],
    workload: str,
    seeds: Sequence[int],
    steps: int | None,
    lr: float | None,
    console: Console,
    device: str | None = None,
) -> list[CompareRow]:
    """Train every (recipe, seed) and return rows ranked by mean final val loss (best first).

    A recipe with any non-succeeded run ranks last (mean = inf)."""
    from core.workloads import get_workload
    from workers.train import run_workload

    spec = get_workload(workload)
    n_steps = steps or spec.default_steps
    rows = []
    for label, rec in recipes:
        row = CompareRow(label)
        for seed in seeds:

            def one(cb: Callbacks, r: Any = rec, s: int = seed) -> TrainResult:
                return run_workload(workload, r, n_steps, s, lr, device, cb)

            row.results.append(train_with_progress(console, f"{label} seed {seed}", one, n_steps))
        rows.append(row)
    return sorted(rows, key=lambda r: r.mean)


def leaderboard_table(rows: Sequence[CompareRow], title: str) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for col in ("#", "recipe", "val loss ± std", "to target", "tok/s", "B/param", "status"):
        table.add_column(col, justify="left" if col == "recipe" else "right", no_wrap=True)
    for rank, row in enumerate(rows, 1):
        res = row.results
        reached = [r.steps_to_target for r in res if r.steps_to_target is not None]
        stt = (
            f"{statistics.fmean(reached):.0f} ({len(reached)}/{len(res)})"
            if reached
            else f"- (0/{len(res)})"
        )
        loss = f"{row.mean:.4f} ± {row.std:.4f}" if math.isfinite(row.mean) else "-"
        statuses = ",".join(sorted({r.status for r in res}))
        table.add_row(
            str(rank),
            row.label,
            loss,
            stt,
            f"{statistics.fmean(r.tokens_per_s for r in res):,.0f}",
            f"{res[0].state_bytes_per_param:.2f}",
            statuses,
        )
    return table


def plot_curves(rows: Sequence[CompareRow], out: Path, title: str) -> Path:
    """Loss curves (train: lines, val: markers), averaged over seeds, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for row in rows:
        train = _mean_curve(row.results, "train_loss")
        val = _mean_curve(row.results, "val_loss")
        (line,) = ax.plot(list(train), list(train.values()), label=f"{row.label} (train)")
        if val:
            ax.plot(
                list(val),
                list(val.values()),
                "o--",
                color=line.get_color(),
                label=f"{row.label} (val)",
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def _mean_curve(results: Sequence[TrainResult], key: str) -> dict[int, float]:
    by_step: dict[int, list[float]] = {}
    for res in results:
        for point in res.curve:
            value = getattr(point, key)
            if value is not None:
                by_step.setdefault(point.step, []).append(value)
    return {s: statistics.fmean(v) for s, v in sorted(by_step.items()) if len(v) == len(results)}


def run_comparison(
    presets: Sequence[str],
    workload: str,
    seeds: int,
    steps: int | None,
    lr: float | None,
    out: Path | None,
    device: str | None = None,
) -> list[CompareRow]:
    """What ``compare`` and ``demo`` do: train, print the ranked table, write the plot."""
    from rich.console import Console

    import optim_core
    from core.workloads import get_workload

    try:
        get_workload(workload)
        recipes = [(name, optim_core.presets.get(name)) for name in presets]
    except ValueError as exc:
        raise fail(str(exc)) from None
    from workers.data import DataUnavailableError

    setup_torch()
    try:
        rows = compare_recipes(
            recipes, workload, range(seeds), steps, lr, stderr_console(), device
        )
    except DataUnavailableError as exc:
        raise fail(str(exc)) from None
    n_steps = rows[0].results[0].steps if rows else steps
    title = f"{workload}, {n_steps} steps, {seeds} seed(s)"
    Console().print(leaderboard_table(rows, title))
    if out is not None:
        plot_curves(rows, out, title)
        typer.echo(f"loss curves: {out}")
    return rows
