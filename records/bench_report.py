"""The read side of benchmarks: the report (statistics per cell) and the confirmed board.

Everything is recomputed from the stored runs on every read (records/bench_stats.py), so a
report can always be checked against its runs. Only confirmation runs enter the statistics;
tuning runs are summarised as the tuning record (trials, seed, best config).
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from core.errors import NotFound
from core.models import TERMINAL_STATUSES, Benchmark, BenchmarkCell, CellPhase, Run, RunStatus
from records.bench_stats import mean_ci, speedup, time_speedup, welch_p

SIGNIFICANCE = 0.05
PROTOCOL = (
    "each arm tuned with the same Optuna budget on the tuning seed at every horizon (re-tuned "
    "per horizon), best config re-run on the confirmation seeds; mean with a 95% t-interval; "
    "Welch t-test vs the baseline at the same horizon; speedup = baseline steps to the arm's "
    "mean loss (log-step interpolation of the tuned baseline's curve, never extrapolated) / "
    "the arm's steps, 95% bootstrap interval over seeds"
)


def progress(session: Session, benchmark_id: int) -> dict[str, int]:
    """Counts for progress bars: cells and runs done, and the planned number of runs."""
    bench = session.get_one(Benchmark, benchmark_id)
    per_cell = int(bench.spec.get("tuning", {}).get("budget", 0)) + len(bench.spec["seeds"])
    phases = [c.phase for c in bench.cells]
    statuses = session.scalars(
        select(Run.status)
        .join(BenchmarkCell, Run.benchmark_cell_id == BenchmarkCell.id)
        .where(BenchmarkCell.benchmark_id == benchmark_id)
    ).all()
    return {
        "cells": len(phases),
        "cells_done": sum(p in (CellPhase.done, CellPhase.failed) for p in phases),
        "runs": len(statuses),
        "runs_done": sum(s in TERMINAL_STATUSES for s in statuses),
        "runs_planned": per_cell * len(phases),
    }


def load_benchmark(session: Session, benchmark_id: int) -> Benchmark:
    bench = session.scalars(
        select(Benchmark)
        .where(Benchmark.id == benchmark_id)
        .options(selectinload(Benchmark.cells).selectinload(BenchmarkCell.runs))
    ).first()
    if bench is None:
        raise NotFound(f"no benchmark {benchmark_id}")
    return bench


def confirm_runs(cell: BenchmarkCell) -> list[Run]:
    return [r for r in cell.runs if r.bench_phase == "confirm"]


def seed_losses(cell: BenchmarkCell) -> list[float]:
    """Final val losses of the cell's succeeded confirmation runs (finite), in seed order."""
    runs = sorted(confirm_runs(cell), key=lambda r: r.seed)
    return [
        float(r.final_val_loss)
        for r in runs
        if r.status == RunStatus.succeeded
        and r.final_val_loss is not None
        and math.isfinite(r.final_val_loss)
    ]


def _step_time(runs: list[Run], tokens_per_step: int) -> float | None:
    """Mean training seconds per step (evaluations excluded) over runs that measured it."""
    times = [tokens_per_step / r.tokens_per_s for r in runs if r.tokens_per_s]
    return sum(times) / len(times) if times else None


def report(session: Session, benchmark_id: int) -> dict[str, Any]:
    """The benchmark as one JSON-able dict (the CLI's ``--json`` and the API's body)."""
    from core.workloads import get_workload

    bench = load_benchmark(session, benchmark_id)
    spec = bench.spec
    tokens = get_workload(bench.workload).tokens_per_step
    base_cells = [c for c in bench.cells if c.arm == 0]
    baseline = {c.horizon: seed_losses(c) for c in base_cells if len(seed_losses(c)) >= 2}
    # step times are compared with the baseline's at the same horizon (same model, same
    # evaluation cadence), so the baseline's own cells have ratio 1 and time speedup = steps
    base_times = {c.horizon: _step_time(confirm_runs(c), tokens) for c in base_cells}
    cells = [_cell(c, spec, baseline, base_times.get(c.horizon), tokens) for c in bench.cells]
    return {
        "id": bench.id,
        "name": bench.name,
        "status": bench.status,
        "origin": bench.origin,
        "workload": bench.workload,
        "baseline": base_cells[0].name if base_cells else None,
        "horizons": sorted({c.horizon for c in bench.cells}),
        "seeds": list(spec["seeds"]),
        "tuning": spec.get("tuning", {}),
        "protocol": PROTOCOL,
        "progress": progress(session, benchmark_id),
        "created_at": bench.created_at,
        "finished_at": bench.finished_at,
        "cells": cells,
    }


def _cell(
    cell: BenchmarkCell,
    spec: dict[str, Any],
    baseline: dict[int, list[float]],
    base_time: float | None,
    tokens: int,
) -> dict[str, Any]:
    losses = seed_losses(cell)
    runs = confirm_runs(cell)
    out: dict[str, Any] = {
        "recipe": cell.name,
        "arm": cell.arm,
        "horizon": cell.horizon,
        "phase": cell.phase,
        "failure_reason": cell.failure_reason,
        "tuning": _tuning(cell, spec),
        "seeds": sorted(r.seed for r in runs),
        "final_val_loss": losses,
        "n_failed": sum(r.status != RunStatus.succeeded for r in runs if r.status != "queued"),
        "run_ids": [r.id for r in sorted(runs, key=lambda r: r.seed)],
        "state_bytes_per_param": _mean([r.state_bytes_per_param for r in runs]),
        "step_time_s": _step_time(runs, tokens),
        **_stats(cell, losses, baseline),
    }
    out["step_time_ratio"] = (
        out["step_time_s"] / base_time if out["step_time_s"] and base_time else None
    )
    steps = out["speedup"]["steps"] if out["speedup"] else None
    out["time_speedup"] = (
        time_speedup(steps, out["step_time_s"], base_time)
        if steps and out["step_time_s"] and base_time
        else None
    )
    return out


def _stats(
    cell: BenchmarkCell, losses: list[float], baseline: dict[int, list[float]]
) -> dict[str, Any]:
    if cell.phase != CellPhase.done or len(losses) < 2:
        return {"mean": None, "ci95": None, "p_value": None, "significant": None, "speedup": None}
    mean, ci = mean_ci(losses)
    base = baseline.get(cell.horizon)
    p = welch_p(losses, base) if base and cell.arm != 0 else None
    sp = speedup(losses, cell.horizon, baseline) if baseline else None
    return {
        "mean": mean,
        "ci95": list(ci),
        "p_value": p,
        "significant": None if p is None else p < SIGNIFICANCE,
        "speedup": None
        if sp is None
        else {
            "steps": sp.steps,
            "ci95": list(sp.ci95),
            "censored": sp.censored,
            "ci_censored": sp.ci_censored,
        },
    }


def _tuning(cell: BenchmarkCell, spec: dict[str, Any]) -> dict[str, Any]:
    tuning = spec.get("tuning", {})
    trials = cell.trials or {}
    return {
        "trials": len(trials),
        "told": sum(t["state"] != "running" for t in trials.values()),
        "budget": tuning.get("budget"),
        "seed": tuning.get("seed", 0),
        "sampler": tuning.get("sampler", "tpe"),
        "axes": cell.axes,
        "best": (cell.best or {}).get("params"),
        "best_value": (cell.best or {}).get("value"),
        "best_trial": (cell.best or {}).get("number"),
        "values": {
            n: t.get("value") for n, t in sorted(trials.items(), key=lambda kv: int(kv[0]))
        },
    }


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def list_benchmarks(session: Session, limit: int = 100) -> list[dict[str, Any]]:
    """Newest first: id, name, workload, status, arms, horizons, progress."""
    rows = session.scalars(select(Benchmark).order_by(Benchmark.id.desc()).limit(limit)).all()
    return [
        {
            "id": b.id,
            "name": b.name,
            "workload": b.workload,
            "status": b.status,
            "origin": b.origin,
            "arms": sorted({c.name for c in b.cells}),
            "horizons": sorted({c.horizon for c in b.cells}),
            "progress": progress(session, b.id),
            "created_at": b.created_at,
        }
        for b in rows
    ]


def confirmed_board(session: Session, workload: str) -> list[dict[str, Any]]:
    """Every finished benchmark cell of ``workload``: the claims, ranked by horizon then loss."""
    ids = session.scalars(
        select(Benchmark.id).where(Benchmark.workload == workload).order_by(Benchmark.id)
    ).all()
    rows: list[dict[str, Any]] = []
    for bid in ids:
        rep = report(session, bid)
        for cell in rep["cells"]:
            if cell["mean"] is None:
                continue
            rows.append({"benchmark_id": bid, "benchmark": rep["name"], **cell})
    rows.sort(key=lambda r: (r["horizon"], r["mean"]))
    return rows
