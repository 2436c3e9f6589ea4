"""Helpers of the training commands (``run``, ``compare``, ``demo``): progress bar, result and
leaderboard tables, the comparison loop and the loss-curve plot. Heavy imports stay inside."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from records.experiments import ExperimentCreate, Plan
    from workers.train import Callbacks, MetricPoint, TrainResult


def json_keys() -> tuple[str, ...]:
    """The keys of a run's ``--json`` output: its status and length, the final metrics a run
    row stores (``core.models.METRIC_COLUMNS``, imported here: the CLI starts without the ORM),
    its curve and environment."""
    from core.models import METRIC_COLUMNS

    return ("status", "steps", *METRIC_COLUMNS, "curve", "env")


# --------------------------------------------------------------------------------------------
# helpers shared by run / compare / demo
# --------------------------------------------------------------------------------------------


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def torch_threads_per_process(processes: int) -> int:
    """``settings.torch_threads``, else the cores shared out between ``processes`` (never
    oversubscribed: two processes with torch's default of all cores each run several times
    slower on a 2-core machine)."""
    from core.config import get_settings

    return get_settings().torch_threads or max(1, (os.cpu_count() or 1) // processes)


def setup_torch(processes: int = 1) -> None:
    """Set torch's threads for one of ``processes`` training processes (the one place the CLI
    configures torch)."""
    import torch

    torch.set_num_threads(torch_threads_per_process(processes))


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
    out = {k: data[k] for k in json_keys()}
    out.update(extra)
    return out


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def result_table(result: dict[str, Any], title: str) -> Table:
    """Final metrics of one run (a ``result_json`` dict or a recorded run row)."""
    from rich.table import Table

    r, env = result, result.get("env") or {}
    stopped = f" (stopped at {r['stopped_step']})" if r.get("stopped_step") else ""
    state, n_params = r.get("state_bytes") or 0, r.get("n_params") or 0
    rows = [
        ("status", str(r["status"])),
        ("final val loss", _fmt(r.get("final_val_loss"))),
        ("steps", f"{r['steps']}{stopped}"),
        ("steps to target",
         f"{_fmt(r.get('target_loss'), '.2f')}: {r.get('steps_to_target') or 'not reached'}"),
        ("tokens/s", _fmt(r.get("tokens_per_s"), ",.0f")),
        ("wall time", f"{_fmt(r.get('wall_s'), '.1f')} s"),
        ("optimizer state", f"{state:,} B ({_fmt(r.get('state_bytes_per_param'), '.2f')} B/param)"),
        ("params", f"{n_params:,}"),
        ("peak memory", f"{(r.get('peak_mem_bytes') or 0) / 2**20:,.0f} MiB"),
        ("env", f"{env.get('device_name')} torch {env.get('torch')} threads {env.get('threads')}"),
    ]  # fmt: skip
    table = Table(title=title, show_header=False)
    for key, value in rows:
        table.add_row(key, value)
    return table


# --------------------------------------------------------------------------------------------
# optforge compare (and demo)
# --------------------------------------------------------------------------------------------


@dataclass
class CompareRow:
    """Results of one recipe over several seeds (``result_json`` dicts or recorded run rows)."""

    label: str
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finals(self) -> list[float]:
        return [
            r["final_val_loss"]
            for r in self.results
            if r.get("final_val_loss") is not None and r["status"] == "succeeded"
        ]

    @property
    def mean(self) -> float:
        ok = self.finals
        return statistics.fmean(ok) if len(ok) == len(self.results) and ok else math.inf

    @property
    def std(self) -> float:
        ok = self.finals
        return statistics.stdev(ok) if len(ok) > 1 else 0.0


def _rows_of(plan: Plan) -> list[CompareRow]:
    return [CompareRow(name or digest[:8]) for name, _, digest in plan.recipes]


def compare_unrecorded(plan: Plan, console: Console, device: str | None) -> list[CompareRow]:
    """Train every planned (recipe, seed, lr) in this process, recording nothing."""
    from workers.train import run_workload

    rows = _rows_of(plan)
    for planned in plan.runs:
        row, canonical = rows[planned.recipe_index], plan.recipes[planned.recipe_index][1]

        def one(
            cb: Callbacks, r: Any = canonical, s: int = planned.seed, lr: float = planned.lr
        ) -> TrainResult:
            return run_workload(plan.workload, r, plan.steps, s, lr, device, cb)

        label = f"{row.label} seed {planned.seed}"
        row.results.append(result_json(train_with_progress(console, label, one, plan.steps)))
    return rows


def compare_recorded(
    spec: ExperimentCreate, plan: Plan, console: Console, device: str | None
) -> tuple[list[CompareRow], int]:
    """Record the experiment, train its new runs through the worker's task body, reuse the rest."""
    from optforge.cli.local_runs import record, run_record, train_recorded

    exp_id, run_ids, to_train = record(spec)
    rows = _rows_of(plan)
    for planned, run_id in zip(plan.runs, run_ids, strict=True):
        row = rows[planned.recipe_index]
        label = f"{row.label} seed {planned.seed} (run {run_id})"
        if run_id in to_train:
            rec = train_recorded(console, run_id, label, plan.steps, device=device)
        else:
            rec = run_record(run_id)
            console.print(f"{label}: reuses run {rec['reused_from_id']}")
        row.results.append(rec)
    return rows, exp_id


def loss_cell(mean: float, std: float, n: int) -> str:
    """``"2.3100 ± 0.0120"``; one seed has no spread, so no ``± 0``."""
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def leaderboard_table(rows: Sequence[CompareRow], title: str) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for col in ("#", "recipe", "val loss ± std", "to target", "tok/s", "B/param", "status"):
        table.add_column(col, justify="left" if col == "recipe" else "right", no_wrap=True)
    for rank, row in enumerate(rows, 1):
        res = row.results
        reached = [r["steps_to_target"] for r in res if r.get("steps_to_target") is not None]
        stt = (
            f"{statistics.fmean(reached):.0f} ({len(reached)}/{len(res)})"
            if reached
            else f"- (0/{len(res)})"
        )
        tps = [r["tokens_per_s"] for r in res if r.get("tokens_per_s") is not None]
        bpp = res[0].get("state_bytes_per_param")
        table.add_row(
            str(rank),
            row.label,
            loss_cell(row.mean, row.std, len(row.finals)),
            stt,
            f"{statistics.fmean(tps):,.0f}" if tps else "-",
            "-" if bpp is None else f"{bpp:.2f}",
            ",".join(sorted({str(r["status"]) for r in res})),
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
            ax.plot(list(val), list(val.values()), "o--", color=line.get_color(),
                    label=f"{row.label} (val)")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def _mean_curve(results: Sequence[dict[str, Any]], key: str) -> dict[int, float]:
    by_step: dict[int, list[float]] = {}
    for res in results:
        for point in res.get("curve") or []:
            value = point.get(key)
            if value is not None:
                by_step.setdefault(point["step"], []).append(value)
    return {s: statistics.fmean(v) for s, v in sorted(by_step.items()) if len(v) == len(results)}


def run_comparison(
    spec: ExperimentCreate,
    plan: Plan,
    out: Path | None,
    device: str | None = None,
    record_runs: bool = True,
) -> list[CompareRow]:
    """What ``compare`` does: train (recorded or not), print the ranked table, write the plot."""
    from rich.console import Console

    from optforge.cli.local_runs import fail, page_url
    from workers.data import DataUnavailableError

    setup_torch()
    console, exp_id = stderr_console(), None
    try:
        if record_runs:
            rows, exp_id = compare_recorded(spec, plan, console, device)
        else:
            rows = compare_unrecorded(plan, console, device)
    except DataUnavailableError as exc:
        raise fail(str(exc)) from None
    rows.sort(key=lambda r: r.mean)
    title = f"{plan.workload}, {plan.steps} steps, {len(spec.seeds)} seed(s)"
    Console().print(leaderboard_table(rows, title))
    if out is not None:
        plot_curves(rows, out, title)
        typer.echo(f"loss curves: {out}")
    if exp_id is not None:
        typer.echo(f"experiment {exp_id}: {page_url(f'/experiments/{exp_id}')}")
    return rows
