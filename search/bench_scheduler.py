"""The benchmark's central asker: one ``tick`` at a time per benchmark.

A benchmark has one *cell* per (arm, horizon). Each cell runs an Optuna sub-study of exactly
``tuning.budget`` trials on the tuning seed at its own horizon (one run per trial; diverged or
failed trials count against the budget, as in AlgoPerf), then the best trial's config runs on
every confirmation seed. ``tick(benchmark_id)`` (the Celery task ``optforge.benchmark_tick``,
the CLI and tests call it):

1. locks the benchmark row, so concurrent ticks serialise;
2. per tuning cell: tells Optuna the trials whose run is terminal, asks new trials until
   ``tuning.parallelism`` are in flight or ``budget`` exist, and, once all are told, picks the
   best (lowest final val loss, ties to the lowest trial number) and queues the confirmation
   runs; per confirming cell: marks it done when its runs are terminal;
3. marks the benchmark completed when every cell is done (or failed), COMMITs, then dispatches.

Runs are ordinary rows of the normal queue (workers, leases, the reaper, reuse of identical
succeeded runs), so a benchmark spreads over all workers and survives a killed worker.
"""

from __future__ import annotations

import math
import uuid
from functools import partial
from typing import Any

from sqlalchemy.orm import Session, selectinload

from core.models import (
    TERMINAL_STATUSES,
    Benchmark,
    BenchmarkCell,
    BenchmarkStatus,
    CellPhase,
    Run,
    RunStatus,
)
from records.bench_report import progress
from records.reuse import reuse_if_stored, upsert_recipe_row
from records.runs import cancel_runs
from search.bench_space import apply_params, pipeline_form
from search.bench_spec import BenchmarkSpec, plan_benchmark
from search.space import FloatRange
from search.trial_runs import (
    Dispatch,
    lock_row,
    now,
    recipe_identity,
    repeat_ticks,
)

OBJECTIVES = ["val_loss"]


def create_benchmark(
    session: Session, spec: BenchmarkSpec, owner: str | None = None, origin: str = "api"
) -> Benchmark:
    """Validate ``spec`` and insert the benchmark with one cell per (arm, horizon); flushes."""
    plan = plan_benchmark(spec)
    bench = Benchmark(
        name=spec.name or f"benchmark-{uuid.uuid4().hex[:8]}",
        spec=spec.model_dump(mode="json", exclude_none=True),
        workload=plan.workload,
        status=BenchmarkStatus.running,
        owner=owner,
        origin=origin,
    )
    session.add(bench)
    session.flush()
    for arm_index, arm in enumerate(plan.arms):
        recipe = upsert_recipe_row(session, arm.name, arm.canonical, arm.digest)
        for horizon in plan.horizons:
            cell = BenchmarkCell(
                benchmark_id=bench.id,
                arm=arm_index,
                name=arm.name,
                recipe_id=recipe.id,
                horizon=horizon,
                phase=CellPhase.tuning,
                optuna_study_name=f"optforge-bench-{uuid.uuid4().hex}",
                axes=arm.axes,
                trials={},
            )
            session.add(cell)
    session.flush()
    return bench


def cancel_benchmark(session: Session, benchmark_id: int) -> Benchmark:
    """Cancel: queued runs cancelled, running runs asked to stop, open cells failed."""
    bench = _lock(session, benchmark_id)
    if bench.status != BenchmarkStatus.running:
        return bench
    cancel_runs(session, Run.benchmark_cell_id.in_([c.id for c in bench.cells]))
    for cell in bench.cells:
        if cell.phase in (CellPhase.tuning, CellPhase.confirming):
            _close(cell, CellPhase.failed, "benchmark cancelled")
    bench.status = BenchmarkStatus.cancelled
    bench.finished_at = now()
    return bench


# --------------------------------------------------------------------------------------------
# tick
# --------------------------------------------------------------------------------------------


def tick(benchmark_id: int, dispatch: Dispatch | None = None) -> dict[str, int]:
    """One scheduling step (see module docstring); returns progress counts."""
    return repeat_ticks(partial(_tick_once, benchmark_id), dispatch)


def _tick_once(benchmark_id: int) -> tuple[list[int], bool, str, dict[str, int]]:
    from core.db import session_scope

    with session_scope() as session:
        to_dispatch, again = tick_in_session(session, benchmark_id)
        bench = session.get_one(Benchmark, benchmark_id)
        queue = str(bench.spec.get("queue") or _default_queue(bench))
    with session_scope() as session:
        return to_dispatch, again, queue, progress(session, benchmark_id)


def _default_queue(bench: Benchmark) -> str:
    from core.config import get_settings
    from core.workloads import get_workload

    return "gpu" if get_workload(bench.workload).gpu_only else get_settings().default_queue


def tick_in_session(session: Session, benchmark_id: int) -> tuple[list[int], bool]:
    """The locked part of :func:`tick`: (run ids to dispatch after the commit, tick again?)."""
    bench = _lock(session, benchmark_id)
    if bench.status != BenchmarkStatus.running:
        return [], False
    spec = BenchmarkSpec.model_validate(bench.spec)
    queue = str(spec.queue or _default_queue(bench))
    dispatch: list[int] = []
    again = False
    for cell in bench.cells:
        if cell.phase == CellPhase.tuning:
            sent, more = _tune(session, cell, spec, queue)
        elif cell.phase == CellPhase.confirming:
            sent, more = [], _confirm(cell)
        else:
            continue
        dispatch += sent
        again = again or more
    if all(c.phase in (CellPhase.done, CellPhase.failed) for c in bench.cells):
        bench.status = BenchmarkStatus.completed
        bench.finished_at = now()
    session.flush()
    return dispatch, again


def _lock(session: Session, benchmark_id: int) -> Benchmark:
    runs = selectinload(Benchmark.cells).selectinload(BenchmarkCell.runs)
    bench: Benchmark = lock_row(session, Benchmark, benchmark_id, "benchmark", runs)
    return bench


# --------------------------------------------------------------------------------------------
# one cell
# --------------------------------------------------------------------------------------------


def _tune(
    session: Session, cell: BenchmarkCell, spec: BenchmarkSpec, queue: str
) -> tuple[list[int], bool]:
    """Tell finished trials, ask new ones; confirm the best once the budget is told."""
    from search import study as ostudy

    trials = {k: dict(v) for k, v in (cell.trials or {}).items()}
    runs = {r.bench_trial: r for r in cell.runs if r.bench_phase == "tune"}
    tuning = spec.tuning
    untold = [n for n, t in trials.items() if t["state"] == "running" and _done(runs.get(int(n)))]
    room = min(tuning.budget - len(trials), tuning.parallelism - _in_flight(trials) + len(untold))
    idle_and_full = len(trials) >= tuning.budget and _in_flight(trials) == 0
    if not untold and room <= 0 and not idle_and_full:
        return [], False
    opt = ostudy.open_study(
        cell.optuna_study_name, OBJECTIVES, tuning.sampler, tuning.seed, len(trials)
    )
    for key in untold:
        _tell(opt, trials[key], runs[int(key)])
    dispatch: list[int] = []
    again = bool(untold)
    pipeline = pipeline_form(cell_recipe(session, cell)) if room > 0 else {}
    for _ in range(max(0, room)):
        ostudy.reseed(opt, tuning.sampler, tuning.seed, len(trials))
        number, params = ostudy.ask_axes(opt, _axes(cell.axes))
        run = _new_run(session, cell, pipeline, params, tuning.seed, queue, ("tune", number))
        trials[str(number)] = {"params": params, "run_id": run.id, "state": "running"}
        if run.status == RunStatus.queued:
            dispatch.append(run.id)
        else:
            again = True  # a reused result: tell it on the next pass
    cell.trials = trials
    if len(trials) >= tuning.budget and _in_flight(trials) == 0:
        dispatch += _start_confirmation(session, cell, spec, queue)
        again = True
    return dispatch, again


def _done(run: Run | None) -> bool:
    return run is not None and run.status in TERMINAL_STATUSES


def _in_flight(trials: dict[str, dict[str, Any]]) -> int:
    return sum(t["state"] == "running" for t in trials.values())


def _tell(opt: Any, trial: dict[str, Any], run: Run) -> None:
    """Record a terminal tuning run as the trial's outcome, here and in Optuna."""
    from search import study as ostudy

    value = run.final_val_loss
    number = int(run.bench_trial or 0)
    if run.status == RunStatus.succeeded and value is not None and math.isfinite(value):
        trial.update(state="complete", value=float(value))
        ostudy.tell(opt, number, "complete", values=[float(value)])
        return
    reason = f"run {run.id} {run.status}" + (
        f": {run.failure_reason}" if run.failure_reason else ""
    )
    trial.update(state="failed", value=None, reason=reason[:300])
    ostudy.tell(opt, number, "failed", reason=reason)


def _axes(stored: dict[str, Any]) -> dict[str, Any]:
    return {k: FloatRange(**v) if isinstance(v, dict) else list(v) for k, v in stored.items()}


def cell_recipe(session: Session, cell: BenchmarkCell) -> dict[str, Any]:
    """The canonical dict of the cell's untuned recipe."""
    from core.models import Recipe

    return dict(session.get_one(Recipe, cell.recipe_id).canonical)


def _new_run(
    session: Session,
    cell: BenchmarkCell,
    pipeline: dict[str, Any],
    params: dict[str, Any],
    seed: int,
    queue: str,
    role: tuple[str, int | None],
) -> Run:
    """A queued run of the cell with ``params`` applied (or a reused succeeded copy)."""
    digest, canonical = recipe_identity(apply_params(pipeline, params))
    recipe = upsert_recipe_row(session, cell.name, canonical, digest)
    warmup = params.get("warmup_frac")
    run = Run(
        benchmark_cell_id=cell.id,
        bench_phase=role[0],
        bench_trial=role[1],
        recipe_id=recipe.id,
        workload=cell.benchmark.workload,
        steps=cell.horizon,
        seed=seed,
        lr=float(params["lr"]),
        warmup_frac=None if warmup is None else float(warmup),
        queue=queue,
        status=RunStatus.queued,
    )
    reuse_if_stored(session, run)
    session.add(run)
    session.flush()
    return run


def _start_confirmation(
    session: Session, cell: BenchmarkCell, spec: BenchmarkSpec, queue: str
) -> list[int]:
    """Pick the best told trial and queue its config on every confirmation seed."""
    complete = [(t["value"], int(n)) for n, t in cell.trials.items() if t["state"] == "complete"]
    if not complete:
        _close(cell, CellPhase.failed, f"all {len(cell.trials)} tuning trials failed or diverged")
        return []
    value, number = min(complete)
    params = cell.trials[str(number)]["params"]
    cell.best = {"number": number, "params": params, "value": value}
    cell.phase = CellPhase.confirming
    pipeline = pipeline_form(cell_recipe(session, cell))
    runs = [
        _new_run(session, cell, pipeline, params, seed, queue, ("confirm", None))
        for seed in spec.seeds
    ]
    return [r.id for r in runs if r.status == RunStatus.queued]


def _confirm(cell: BenchmarkCell) -> bool:
    """Close the cell once its confirmation runs are terminal; True when it closed."""
    runs = [r for r in cell.runs if r.bench_phase == "confirm"]
    if runs and all(r.status in TERMINAL_STATUSES for r in runs):
        _close(cell, CellPhase.done)
        return True
    return False


def _close(cell: BenchmarkCell, phase: CellPhase, reason: str | None = None) -> None:
    cell.phase = phase
    cell.failure_reason = reason
    cell.finished_at = now()
