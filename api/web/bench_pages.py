"""Benchmark pages: the list, one benchmark's claims table and plot, the confirmed board.

Every number on these pages comes from ``records.bench_report`` (recomputed from stored runs);
the page only arranges it: a table with mean ± 95 % CI, p-value, speedups with their
intervals, state bytes and step-time ratio, and the loss-vs-horizon plot of every arm with its
confidence band next to the baseline's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from api.deps import SessionDep
from api.web import auth
from api.web.csv_export import csv_response, csv_table
from api.web.render import for_id, not_found, page_for_id, render
from core.workloads import WORKLOADS

router = APIRouter(include_in_schema=False, route_class=auth.PageRoute)
CSV_COLUMNS = (
    "recipe", "arm", "horizon", "phase", "mean", "ci95_low", "ci95_high", "p_value",
    "significant", "speedup_steps", "speedup_ci95_low", "speedup_ci95_high", "speedup_censored",
    "time_speedup", "step_time_ratio", "state_bytes_per_param", "seeds", "final_val_loss",
    "best_params",
)  # fmt: skip


def horizon_plot(rep: dict[str, Any]) -> dict[str, Any]:
    """Loss vs horizon (log steps) per arm: the mean line and its 95 % CI band."""
    series: list[dict[str, Any]] = []
    for arm in sorted({c["arm"] for c in rep["cells"]}):
        cells = sorted((c for c in rep["cells"] if c["arm"] == arm and c["mean"] is not None),
                       key=lambda c: c["horizon"])  # fmt: skip
        if not cells:
            continue
        name = cells[0]["recipe"] + (" (baseline)" if arm == 0 else "")
        series.append({"label": name, "group": name,
                       "points": [[c["horizon"], c["mean"]] for c in cells]})  # fmt: skip
        for edge, i in (("upper", 1), ("lower", 0)):
            pts = [[c["horizon"], c["ci95"][i]] for c in cells]
            series.append({"label": f"{name} {edge}", "group": name, "band": edge, "points": pts})
    return {"kind": "curves", "x_label": "horizon (steps, log)", "y_label": "final val loss",
            "x_log": True, "series": series}  # fmt: skip


def _report(session: Session, benchmark_id: int) -> dict[str, Any]:
    from records.bench_report import report

    return report(session, benchmark_id)


@router.get("/benchmarks")
def benchmarks_page(request: Request, session: SessionDep) -> Response:
    """Every benchmark, newest first."""
    from records.bench_report import list_benchmarks

    return render(request, "benchmarks.html", {"benchmarks": list_benchmarks(session)})


@router.get("/benchmarks.csv")
def benchmarks_csv(session: SessionDep) -> Response:
    """The benchmark list as CSV."""
    from records.bench_report import list_benchmarks

    rows = [{**b, "arms": " ".join(b["arms"]), "horizons": " ".join(map(str, b["horizons"])),
             "runs_done": b["progress"]["runs_done"],
             "runs_planned": b["progress"]["runs_planned"]} for b in list_benchmarks(session)]  # fmt: skip
    cols = ("id", "name", "workload", "status", "origin", "arms", "horizons", "runs_done",
            "runs_planned", "created_at")  # fmt: skip
    return csv_response(rows, cols, "benchmarks.csv")


@router.get("/benchmarks/{benchmark_id}")
def benchmark_page(request: Request, session: SessionDep, benchmark_id: str) -> Response:
    """One benchmark: claims table (mean ± CI, p, speedups), loss-vs-horizon plot."""
    return page_for_id(
        request, "benchmark.html", "benchmark", benchmark_id, lambda bid: _page(session, bid)
    )


def _page(session: Session, benchmark_id: int) -> dict[str, Any]:
    rep = _report(session, benchmark_id)
    cells = sorted(rep["cells"], key=lambda c: (c["horizon"], c["arm"]))
    return {"b": rep, "cells": cells, "plot": horizon_plot(rep)}


@router.get("/benchmarks/{benchmark_id}/cells.csv")
def benchmark_csv(request: Request, session: SessionDep, benchmark_id: str) -> Response:
    """The claims table as CSV (one row per arm and horizon)."""
    return for_id(
        request, "benchmark", benchmark_id, lambda bid: _report(session, bid), _cells_csv
    )


def _cells_csv(benchmark_id: int, rep: dict[str, Any]) -> Response:
    rows = (csv_row(cell) for cell in rep["cells"])
    return csv_table(CSV_COLUMNS, rows, f"benchmark-{benchmark_id}.csv")


def csv_row(cell: dict[str, Any]) -> list[Any]:
    ci = cell.get("ci95") or [None, None]
    sp = cell.get("speedup") or {}
    sp_ci = sp.get("ci95") or [None, None]
    return [
        cell["recipe"], cell["arm"], cell["horizon"], cell["phase"], cell["mean"], ci[0], ci[1],
        cell["p_value"], cell["significant"], sp.get("steps"), sp_ci[0], sp_ci[1],
        sp.get("censored"), cell["time_speedup"], cell["step_time_ratio"],
        cell["state_bytes_per_param"], " ".join(map(str, cell["seeds"])),
        " ".join(f"{v:.6f}" for v in cell["final_val_loss"]), cell["tuning"].get("best"),
    ]  # fmt: skip


@router.get("/confirmed")
def confirmed_page(request: Request, session: SessionDep, workload: str | None = None) -> Response:
    """The confirmed board: only benchmarked cells (claims), by horizon then mean loss."""
    from records.bench_report import confirmed_board

    name = workload or "shakespeare-lm"
    if name not in WORKLOADS:
        return _no_workload(request, name)
    ctx = {"workload": name, "rows": confirmed_board(session, name), "workloads": list(WORKLOADS)}
    return render(request, "confirmed.html", ctx)


@router.get("/confirmed.csv")
def confirmed_csv(request: Request, session: SessionDep, workload: str | None = None) -> Response:
    """The confirmed board as CSV: its benchmark, then the claims table's columns."""
    from records.bench_report import confirmed_board

    name = workload or "shakespeare-lm"
    if name not in WORKLOADS:
        return _no_workload(request, name)
    header = ("benchmark_id", "benchmark", *CSV_COLUMNS)
    rows = (
        [r["benchmark_id"], r["benchmark"], *csv_row(r)] for r in confirmed_board(session, name)
    )
    return csv_table(header, rows, f"confirmed-{name}.csv")


def _no_workload(request: Request, name: str) -> Response:
    valid = ", ".join(WORKLOADS)
    return not_found(request, f"There is no workload {name!r}; valid: {valid}.")
