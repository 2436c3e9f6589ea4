"""CLI command: ``optforge benchmark SPEC.yaml`` (the claim-making comparison).

On the embedded default the benchmark goes through the service's own code path: the benchmark,
its cells and runs are rows of the SQLite database, the central asker is
``search.bench_scheduler.tick`` and each run is trained by the worker's task body
(``workers.tasks.execute_run``) in ``--workers`` processes. ``--submit`` posts the spec to a
running API instead. Interrupted? Run the same command with ``--resume ID``.
"""

from __future__ import annotations

import json
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Annotated, Any

import typer

from optforge.cli.api_cmds import _fail, _load_spec
from optforge.cli.local_runs import scratch_databases


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark_cmd)


def benchmark_cmd(
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML/JSON spec")],
    as_json: Annotated[
        bool, typer.Option("--json", help="print the report as one JSON object")
    ] = False,
    submit: Annotated[
        bool, typer.Option("--submit", help="POST it to a running API instead")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="local training processes")] = 2,
    resume: Annotated[
        int | None, typer.Option(help="continue benchmark ID (same database)")
    ] = None,
    api: Annotated[str | None, typer.Option(help="API base URL for --submit")] = None,
    key: Annotated[str | None, typer.Option(envvar="OPTFORGE_API_KEY", help="API key")] = None,
    no_record: Annotated[
        bool, typer.Option("--no-record", help="keep the benchmark out of the database")
    ] = False,
) -> None:
    """Tune every arm equally per horizon, confirm on fresh seeds, print the claims table."""
    body = _load_spec(spec)
    if submit:
        _submit(body, api, key)
        return
    if no_record:
        if resume is not None:
            raise typer.BadParameter("--resume continues a recorded benchmark: drop --no-record")
        scratch_databases("benchmark")
    bench_id = resume if resume is not None else _create(body)
    _drive(bench_id, workers)
    rep = _report(bench_id)
    if as_json:
        typer.echo(json.dumps(rep, default=str, indent=1))
    else:
        typer.echo(table_text(rep))


def _create(body: dict[str, Any]) -> int:
    from pydantic import ValidationError

    from core.db import session_scope
    from migrations.runner import upgrade
    from records.recipes import RecipeError, UnknownNameError
    from search.bench_scheduler import create_benchmark
    from search.bench_spec import BenchmarkSpec

    upgrade()
    try:
        parsed = BenchmarkSpec.model_validate(body)
        with session_scope() as session:
            return create_benchmark(session, parsed, owner="cli", origin="cli").id
    except UnknownNameError as exc:
        raise typer.BadParameter(f"{exc}") from exc
    except (ValidationError, RecipeError) as exc:
        raise typer.BadParameter(_one_line(exc)) from exc


def _one_line(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    items = errors() if callable(errors) else errors
    if items:
        first = items[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return str(exc)


def _init_worker(processes: int = 1) -> None:
    from core.process import die_with_parent
    from optforge.cli.train_common import setup_torch

    if processes > 1:
        die_with_parent()
    setup_torch(processes)


def _execute(run_id: int) -> str:
    from workers.tasks import execute_run

    return execute_run(run_id, owner=f"optforge-benchmark-{run_id}")


def _drive(bench_id: int, workers: int) -> None:
    """Tick, train what the tick queued (``workers`` processes; 1 = this process), tick
    again, until nothing is left to train."""
    from optforge.cli.train_common import stderr_console

    with _Bar(stderr_console(), bench_id) as bar:
        if workers == 1:
            _init_worker()
            drive_inline(bench_id, bar.update)
        else:
            _drive_pool(bench_id, workers, bar.update)


def drive_inline(bench_id: int, report: Any = None) -> None:
    """Train every run the benchmark asks for, one after the other, in this process."""
    pending: list[int] = []
    counts = _tick(bench_id, pending)
    while pending:
        _execute(pending.pop(0))
        counts = _tick(bench_id, pending)
        if report:
            report(counts)


def _drive_pool(bench_id: int, workers: int, report: Any) -> None:
    import multiprocessing as mp

    pending: list[int] = []
    running: dict[Future[str], int] = {}
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(workers,)
    ) as pool:
        counts = _tick(bench_id, pending)
        while pending or running:
            while pending:
                run_id = pending.pop(0)
                running[pool.submit(_execute, run_id)] = run_id
            done, _ = wait(list(running), timeout=2.0, return_when=FIRST_COMPLETED)
            for fut in done:
                running.pop(fut)
                fut.result()
            if done:
                counts = _tick(bench_id, pending)
            report(counts)


def _tick(bench_id: int, pending: list[int]) -> dict[str, int]:
    from search.bench_scheduler import tick

    return tick(bench_id, dispatch=pending.append)


class _Bar:
    """A rich progress bar over the benchmark's planned runs."""

    def __init__(self, console: Any, bench_id: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn(f"[bold]benchmark {bench_id}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("runs, {task.fields[cells]} cells done"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("runs", total=None, cells="0/?")

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, counts: dict[str, int]) -> None:
        self.progress.update(
            self.task,
            total=counts.get("runs_planned") or None,
            completed=counts.get("runs_done", 0),
            cells=f"{counts.get('cells_done', 0)}/{counts.get('cells', 0)}",
        )


def _report(bench_id: int) -> dict[str, Any]:
    from core.db import session_scope
    from records.bench_report import report

    with session_scope() as session:
        return report(session, bench_id)


def _submit(body: dict[str, Any], api: str | None, key: str | None) -> None:
    import httpx

    from core.config import get_settings

    base = (api or get_settings().public_url).rstrip("/")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        resp = httpx.post(f"{base}/v1/benchmarks", json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach the API at {base}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if resp.status_code >= 400:
        _fail(resp)
    out = resp.json()
    typer.echo(f"benchmark {out['id']} accepted: {base}/benchmarks/{out['id']}")


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def speedup_text(sp: dict[str, Any] | None) -> str:
    """``1.52x [1.31, 1.80]``; a censored point reads ``>3.00x`` (the baseline never got there)."""
    if not sp:
        return "-"
    mark = {">": ">", "<": "<"}.get(sp.get("censored") or "", "")
    lo, hi = sp["ci95"]
    return f"{mark}{sp['steps']:.2f}x [{lo:.2f}, {hi:.2f}]{'*' if sp.get('ci_censored') else ''}"


def _censor_mark(cell: dict[str, Any]) -> str:
    """``>``/``<`` when the cell's step speedup is only a bound (its time speedup is too)."""
    return str((cell.get("speedup") or {}).get("censored") or "")


def ci_text(cell: dict[str, Any]) -> str:
    if cell.get("mean") is None:
        return cell.get("phase") or "-"
    lo, hi = cell["ci95"]
    return f"{cell['mean']:.4f} ± {(hi - lo) / 2:.4f}"


def table_text(rep: dict[str, Any]) -> str:
    """The claims table: one row per (arm, horizon), grouped by horizon."""
    from rich.console import Console
    from rich.table import Table

    title = (
        f"benchmark {rep['id']} on {rep['workload']}: baseline {rep['baseline']}, "
        f"seeds {rep['seeds']}, tuning budget {rep['tuning'].get('budget')} per arm and horizon"
    )
    table = Table(title=title, caption=rep["protocol"])
    cols = ("horizon", "recipe", "val loss (95% CI)", "p vs base", "speedup steps [CI]")
    for col in (*cols, "time speedup", "step time ratio", "state B/param", "best lr"):
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for cell in sorted(rep["cells"], key=lambda c: (c["horizon"], c["arm"])):
        p = cell.get("p_value")
        best = cell["tuning"].get("best") or {}
        table.add_row(
            str(cell["horizon"]),
            cell["recipe"] + (" (baseline)" if cell["arm"] == 0 else ""),
            ci_text(cell),
            "-" if p is None else f"{p:.3g}{' sig' if cell.get('significant') else ''}",
            speedup_text(cell.get("speedup")),
            _censor_mark(cell) + _fmt(cell.get("time_speedup"), ".2f"),
            _fmt(cell.get("step_time_ratio"), ".2f"),
            _fmt(cell.get("state_bytes_per_param"), ".2f"),
            _fmt(best.get("lr"), ".2e"),
        )
    console = Console(width=160, record=True)
    with console.capture() as capture:
        console.print(table)
    return capture.get()
