"""Data for the web pages: plain dicts built from the DB (no torch, no FastAPI).

Each ``*_view`` function returns what one template needs, or raises ``LookupError`` for an
unknown id (the page turns that into a 404 page).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import Recipe, Run, RunMetric
from records.runs import run_dict

PER_PAGE = 25
MAX_COMPARE = 8
_PLOT_LIMIT = 1000  # leaderboard rows fetched for the Pareto plot (one point each)


@dataclass(frozen=True)
class Page:
    """One page of a table: 1-based ``number`` of ``pages`` over ``total`` rows."""

    number: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.per_page

    @property
    def has_prev(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def make_page(number: int, total: int, per_page: int = PER_PAGE) -> Page:
    """A page clamped to the existing range (page 99 of 3 pages shows page 3)."""
    pages = max(1, math.ceil(total / per_page))
    return Page(min(max(1, number), pages), per_page, total)


# --- leaderboard -------------------------------------------------------------------------------


def leaderboard_view(
    session: Session,
    workload: str | None,
    steps: int | None,
    page: int,
    sort: str = "val_loss",
    everything: bool = False,
) -> dict[str, Any]:
    """Leaderboard table (one page) and Pareto plot points (all rows) for one workload/steps."""
    from records.leaderboard import SORT_FIELDS, board_choices, leaderboard

    if sort.lstrip("-") not in SORT_FIELDS:
        sort = "val_loss"

    options = board_choices(session, split_reused=True)
    unknown = _unknown_workload(workload)
    if (workload is None or steps is None) and options and not unknown:
        workload = workload or options[0]["workload"]
        steps = steps or next(
            (o["steps"] for o in options if o["workload"] == workload), options[0]["steps"]
        )
    empty = {"options": options, "workload": workload, "steps": steps, "rows": [], "sort": sort,
             "unknown": unknown}  # fmt: skip
    if workload is None or steps is None or unknown:
        return {**empty, "page": make_page(1, 0), "plot": _pareto_plot([])}
    board = leaderboard(session, workload, steps, sort=sort, limit=_PLOT_LIMIT, offset=0)
    all_rows = list(board["rows"])  # the plot shows up to _PLOT_LIMIT recipes
    pg = make_page(page, int(board["total"]), max(1, len(all_rows)) if everything else PER_PAGE)
    if pg.offset + pg.per_page <= len(all_rows) or pg.total <= len(all_rows):
        page_rows = all_rows[pg.offset : pg.offset + pg.per_page]
    else:  # a page past the plotted rows
        more = leaderboard(session, workload, steps, sort, limit=pg.per_page, offset=pg.offset)
        page_rows = more["rows"]
    rows = [{**r, "rank": pg.offset + i + 1} for i, r in enumerate(page_rows)]
    return {**empty, "rows": rows, "total": board.get("total"), "page": pg,
            "plot": _pareto_plot(all_rows)}  # fmt: skip


def _unknown_workload(name: str | None) -> dict[str, Any] | None:
    """``{"name", "valid"}`` when ``?workload=`` names no workload of the catalog."""
    from core.workloads import workload_names

    valid = workload_names()
    return None if name is None or name in valid else {"name": name, "valid": valid}


def _pareto_plot(rows: list[dict[str, Any]]) -> dict[str, Any]:
    points = [
        {
            "x": r["state_bytes_per_param"],
            "y": r["val_loss_mean"],
            "label": _label(r),
            "hash": r["recipe_hash"],
            "href": f"/recipes/{r['recipe_hash']}",
            "pareto": bool(r.get("pareto")),
        }
        for r in rows
        if _finite(r.get("state_bytes_per_param")) and _finite(r.get("val_loss_mean"))
    ]
    return {
        "kind": "pareto",
        "x_label": "optimizer state bytes / param",
        "y_label": "val loss (mean over seeds)",
        "points": points,
    }


def _label(row: dict[str, Any]) -> str:
    """Named recipes (presets, user names) and study trials ("study 4 / trial 7") are labelled;
    hash-named ones are not."""
    name = str(row.get("label") or row.get("name") or "")
    return "" if not name or row["recipe_hash"].startswith(name) else name


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


# --- runs -------------------------------------------------------------------------------------


def run_row(r: Run) -> dict[str, Any]:
    """One run as the pages show it: ``records.runs.run_dict`` plus its trial link and origin."""
    return {**run_dict(r), **trial_link(r), "origin": run_origin(r)}


def trial_link(r: Run) -> dict[str, Any]:
    """``study_id``, ``trial_number`` (Optuna's) and ``trial_label`` "study N / trial k"."""
    t = r.trial
    if t is None:
        return {"study_id": None, "trial_number": None, "trial_label": None}
    return {"study_id": t.study_id, "trial_number": t.number,
            "trial_label": f"study {t.study_id} / trial {t.number}"}  # fmt: skip


def run_origin(r: Run) -> str:
    """Where a run came from: the experiment's origin (cli, demo, api...), or study."""
    if r.trial is not None:
        return f"study ({r.trial.study.origin})"
    if r.experiment is not None:
        return r.experiment.origin
    return "benchmark" if r.benchmark_cell_id is not None else "api"


def curve(session: Session, run_id: int) -> list[dict[str, Any]]:
    """A run's metric points ordered by step."""
    rows = session.scalars(
        select(RunMetric).where(RunMetric.run_id == run_id).order_by(RunMetric.step)
    ).all()
    return [
        {"step": m.step, "t": m.elapsed_s, "train": m.train_loss, "val": m.val_loss, "lr": m.lr}
        for m in rows
    ]


def curve_series(label: str, points: list[dict[str, Any]], x: str) -> list[dict[str, Any]]:
    """Train and val series of one run against ``x`` ("step" or "t")."""
    out = []
    for key in ("train", "val"):
        pts = [[p[x], p[key]] for p in points if _finite(p[key]) and _finite(p[x])]
        if pts:
            out.append({"label": f"{label} {key}", "points": pts, "dashed": key == "train"})
    return out


def curves_plot(series: list[dict[str, Any]], x_label: str) -> dict[str, Any]:
    return {"kind": "curves", "x_label": x_label, "y_label": "loss", "series": series,
            "x_integer": x_label == "step"}  # fmt: skip


def run_view(session: Session, run_id: int) -> dict[str, Any]:
    run = session.get(Run, run_id)
    if run is None:
        raise LookupError(f"no run {run_id}")
    points = curve(session, run.reused_from_id or run_id)
    label = f"run {run_id}"
    return {
        "run": run_row(run),
        "env": run.env or {},
        "recipe": recipe_row(run.recipe),
        "n_points": len(points),
        "by_step": curves_plot(curve_series(label, points, "step"), "step"),
        "by_time": curves_plot(curve_series(label, points, "t"), "wall time (s)"),
    }


def compare_view(session: Session, ids: list[int]) -> dict[str, Any]:
    """Overlaid curves of several runs; unknown ids are listed, not fatal."""
    runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(ids))).all()}
    found = [runs[i] for i in ids if i in runs]
    by_step: list[dict[str, Any]] = []
    by_time: list[dict[str, Any]] = []
    for r in found:
        points = curve(session, r.id)
        label = f"#{r.id} {r.recipe.name or r.recipe.hash[:8]}"
        by_step += curve_series(label, points, "step")
        by_time += curve_series(label, points, "t")
    from api.web.live import seed_bands

    return {
        "runs": [{**run_row(r), "recipe": recipe_row(r.recipe)} for r in found],
        "bands": seed_bands(session, found),
        "missing": [i for i in ids if i not in runs],
        "by_step": curves_plot(by_step, "step"),
        "by_time": curves_plot(by_time, "wall time (s)"),
    }


def parse_ids(text: str | None) -> list[int]:
    """``"1, 2,x,2"`` -> ``[1, 2]`` (unique, in order, at most MAX_COMPARE; ASCII ids < 10**9)."""
    out: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if part.isascii() and part.isdigit() and len(part) < 10 and int(part) not in out:
            out.append(int(part))
    return out[:MAX_COMPARE]


# --- recipes ----------------------------------------------------------------------------------


def recipe_row(r: Recipe) -> dict[str, Any]:
    return {"id": r.id, "hash": r.hash, "name": r.name, "canonical": r.canonical}


def recipe_view(
    session: Session, recipe_hash: str, page: int, per_page: int = PER_PAGE
) -> dict[str, Any]:
    recipe = session.scalars(select(Recipe).where(Recipe.hash == recipe_hash)).first()
    if recipe is None:
        raise LookupError(f"no recipe {recipe_hash}")
    total = session.scalar(select(func.count(Run.id)).where(Run.recipe_id == recipe.id)) or 0
    pg = make_page(page, total, per_page)
    runs = session.scalars(
        select(Run)
        .where(Run.recipe_id == recipe.id)
        .order_by(Run.id.desc())
        .offset(pg.offset)
        .limit(pg.per_page)
    ).all()
    return {"recipe": recipe_row(recipe), "runs": [run_row(r) for r in runs], "page": pg}
