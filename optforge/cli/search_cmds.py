"""CLI commands: ``optforge search`` (a study on the embedded default) and ``optforge dashboard``.

``optforge search`` uses the same scheduler code path as the service (``search.scheduler.tick``
asks/tells; runs are rows in our DB); instead of a broker, the runs it dispatches are executed by
``--parallel`` local processes that call the worker's own task body
(``workers.tasks.execute_run``), so claiming, leases, training, metrics and the pruner hook are
exactly the worker's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import typer

from optforge.cli.local_runs import fail, page_url, scratch_databases

Execute = Callable[[int], Any]


def execute_run(run_id: int) -> str:
    """Run one queued run in this process through the worker's task body."""
    from workers.tasks import execute_run as worker_execute_run

    return worker_execute_run(run_id)


def _init_child(threads: int) -> None:
    """Pool-process init: ``threads`` intra-op threads (the local processes share the CPU).

    Set before torch is imported in the child (torch reads it then), so idle children stay
    light; oversubscribed threads slow CPU training several-fold.
    """
    import os

    from core.process import die_with_parent

    die_with_parent()
    os.environ["OMP_NUM_THREADS"] = str(max(1, threads))


class _InlineExecutor(Executor):
    """Runs submitted calls immediately in this process (``--parallel 1``)."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - reported through the future
            fut.set_exception(exc)
        return fut


def run_local_study(
    study_id: int,
    parallel: int,
    execute: Execute = execute_run,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    poll_s: float = 0.5,
) -> dict[str, Any]:
    """Drive a study to completion with ``parallel`` local executors; returns the detail."""
    from core.db import session_scope
    from search.scheduler import tick
    from search.study_view import study_detail

    queue: list[int] = []
    running: dict[Future[Any], int] = {}
    pool: Executor = _InlineExecutor() if parallel <= 1 else _process_pool(parallel)
    try:
        while True:
            tick(study_id, dispatch=queue.append)
            with session_scope() as session:
                detail = study_detail(session, study_id)
            if on_progress:
                on_progress(detail)
            if detail["status"] != "running":
                return detail
            while queue and len(running) < max(parallel, 1):
                run_id = queue.pop(0)
                running[pool.submit(execute, run_id)] = run_id
            if running:
                done, _ = wait(list(running), timeout=None, return_when=FIRST_COMPLETED)
                for fut in done:
                    running.pop(fut)
                    if fut.exception() is not None:
                        typer.echo(f"run failed in executor: {fut.exception()!r}", err=True)
            else:
                time.sleep(poll_s)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _process_pool(parallel: int) -> Executor:
    import multiprocessing

    from optforge.cli.train_common import torch_threads_per_process

    threads = torch_threads_per_process(parallel)
    return ProcessPoolExecutor(
        max_workers=parallel,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_child,
        initargs=(threads,),
    )


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def pareto_table(detail: dict[str, Any]) -> Any:
    """A rich table of the study's current Pareto front."""
    from rich.table import Table

    objectives = detail.get("objectives") or ["value"]
    table = Table(title=f"Pareto front of study {detail['id']} ({detail['workload']})")
    for col in ["trial", *objectives, "norms", "momentum", "rank", "bits", "lr"]:
        table.add_column(col)
    for t in detail["pareto_front"]:
        d = (t.get("recipe") or {}).get("design", {})
        table.add_row(
            f"study {detail['id']} / trial {t['number']}",
            *[_fmt(v) for v in t["values"]],
            ">".join(d.get("norms", [])) or "-",
            str((d.get("momentum") or {}).get("placement", "-")),
            str(d.get("rank")),
            str(d.get("state_bits")),
            _fmt((t.get("recipe") or {}).get("lr")),
        )
    return table


def _progress_line(detail: dict[str, Any]) -> str:
    p = detail["progress"]
    done = p["complete"] + p["pruned"] + p["failed"]
    best = detail["best_trials"][0]["values"] if detail["best_trials"] else None
    return (
        f"trials {done}/{p['n_trials']} (running {p['running']}, pruned {p['pruned']}, "
        f"failed {p['failed']}) best {best} front {len(detail['pareto_front'])}"
    )


def _search(
    workload: str,
    trials: int,
    space: Path | None,
    parallel: int,
    steps: int | None,
    seed: int,
    sampler: str,
    as_json: bool,
    no_record: bool = False,
) -> None:
    from rich.console import Console

    from migrations.runner import upgrade

    if no_record:
        scratch_databases("study")
    upgrade()  # the embedded default's SQLite database: create or migrate it (idempotent)
    body = {"workload": workload, "steps": _default_steps(workload) if steps is None else steps,
            "space": _load_space_dict(space), "n_trials": trials, "parallelism": parallel,
            "seed": seed, "sampler": sampler}  # fmt: skip
    study_id = _create_cli_study(body)
    console = Console(stderr=as_json)
    detail = _run_with_live_front(study_id, parallel, console, transient=as_json)
    if as_json:
        typer.echo(json.dumps(detail, default=str))
    else:
        console.print(pareto_table(detail))
        console.print(_progress_line(detail))
    typer.echo(f"study {study_id}: {page_url(f'/studies/{study_id}')}", err=as_json)


def _run_with_live_front(
    study_id: int, parallel: int, console: Any, transient: bool
) -> dict[str, Any]:
    """Run the study locally under a live progress line and Pareto table; Ctrl-C cancels it."""
    from rich.console import Group
    from rich.live import Live

    try:
        with Live(console=console, refresh_per_second=2, transient=transient) as live:

            def show(detail: dict[str, Any]) -> None:
                live.update(Group(_progress_line(detail), pareto_table(detail)))

            return run_local_study(study_id, parallel, on_progress=show)
    except KeyboardInterrupt:
        _cancel(study_id)
        typer.echo(f"interrupted: study {study_id} cancelled", err=True)
        raise typer.Exit(130) from None


def _create_cli_study(body: dict[str, Any]) -> int:
    """Validate (the API's StudySpec and create_study checks) and insert the study (origin cli)."""
    from core.db import session_scope
    from search.scheduler import StudySpec, create_study

    try:
        spec = StudySpec(**body)
        with session_scope() as session:
            study = create_study(session, spec, owner="cli")
            study.origin = "cli"
            return int(study.id)
    except ValueError as exc:  # SpaceError, StudySpecError, unknown workload, pydantic errors
        raise fail(_spec_error(exc)) from None


def _cancel(study_id: int) -> None:
    from core.db import session_scope
    from search.scheduler import cancel_study

    with session_scope() as session:
        cancel_study(session, study_id)


def _default_steps(workload: str) -> int:
    from core.errors import NotFound
    from core.workloads import get_workload

    try:
        return int(get_workload(workload).default_steps)
    except NotFound as exc:
        raise fail(f"--workload: {exc}") from None


def _spec_error(exc: ValueError) -> str:
    """One line for a StudySpec / space / study refusal, naming the CLI flag."""
    from pydantic import ValidationError

    flags = {"n_trials": "--trials", "parallelism": "--parallel", "space": "--space"}
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
    else:
        loc = getattr(exc, "loc", None) or getattr(exc, "field", None) or ()
        field = ".".join(map(str, loc)) if isinstance(loc, tuple | list) else str(loc)
        msg = str(exc)
    flag = flags.get(field, f"--{field}" if field else "")
    return f"{flag}: {msg}" if flag and not msg.startswith(flag) else msg


def _load_space_dict(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    from search.space import load_space

    try:
        return load_space(path).model_dump(mode="json", by_alias=True)
    except ValueError as exc:  # SpaceError, YAML errors, pydantic errors
        raise fail(f"--space {path}: {_spec_error(exc)}") from None


def dashboard_command() -> str | None:
    """The venv's ``optuna-dashboard`` (beside this Python), else one on PATH, else None."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "optuna-dashboard"
    return str(beside) if beside.is_file() else shutil.which("optuna-dashboard")


def _dashboard(port: int, host: str) -> None:
    import importlib.util
    import subprocess

    from core.config import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    url = settings.optuna_storage_url
    exe = dashboard_command()
    if exe is None and importlib.util.find_spec("optuna_dashboard") is None:
        typer.echo("optuna-dashboard is not installed: pip install 'optuna-dashboard>=0.17'")
        raise typer.Exit(1)
    typer.echo(f"optuna-dashboard on {url} at http://{host}:{port}")
    if exe is not None:
        subprocess.run([exe, url, "--port", str(port), "--host", host], check=False)  # noqa: S603
        return
    from optuna_dashboard import run_server  # in-process: no console script was installed

    run_server(url, host=host, port=port)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""

    @app.command("search")
    def search(
        workload: str = typer.Option("shakespeare-lm", help="workload name"),
        trials: int = typer.Option(30, "--trials", help="number of trials"),
        space: Path | None = typer.Option(None, help="design space YAML/JSON (default: shipped)"),
        parallel: int = typer.Option(2, "--parallel", help="local worker processes"),
        steps: int | None = typer.Option(None, help="steps per run (default: workload's)"),
        seed: int = typer.Option(0, help="study (sampler) seed"),
        sampler: str = typer.Option("tpe", help="tpe | nsga2 | gp | random"),
        as_json: bool = typer.Option(
            False, "--json", metavar="", help="print the final study as JSON"
        ),
        no_record: bool = typer.Option(
            False, "--no-record", metavar="", help="keep the study out of the database"
        ),
    ) -> None:
        """Search the recipe design space with Optuna on the embedded default."""
        _search(workload, trials, space, parallel, steps, seed, sampler, as_json, no_record)

    @app.command("dashboard")
    def dashboard(
        port: int = typer.Option(8080, help="dashboard port"),
        host: str = typer.Option("127.0.0.1", help="dashboard host"),
    ) -> None:
        """Open optuna-dashboard on the study storage (settings.optuna_storage_url)."""
        _dashboard(port, host)
