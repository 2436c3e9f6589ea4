"""Data of the study pages: list, one study (progress, Pareto front, history, parallel
coordinates, slice plots) and its fANOVA importances (plain dicts; no FastAPI, no torch)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.web.views import _finite, make_page
from core.models import SearchStudy


def studies_view(session: Session, page: int) -> dict[str, Any]:
    from search.scheduler import progress
    from search.study_view import study_dict

    total = session.scalar(select(func.count(SearchStudy.id))) or 0
    pg = make_page(page, total)
    rows = session.scalars(
        select(SearchStudy).order_by(SearchStudy.id.desc()).offset(pg.offset).limit(pg.per_page)
    ).all()
    studies = [{**study_dict(s), "progress": progress(session, s.id)} for s in rows]
    return {"studies": studies, "page": pg}


def study_view(session: Session, study_id: int, page: int) -> dict[str, Any]:
    from search.study_view import study_detail, trial_dicts

    detail = study_detail(session, study_id)  # LookupError for an unknown id
    trials = trial_dicts(session, study_id)
    objectives = detail.get("objectives") or ["val_loss", "state_bytes_per_param"]
    front_ids = {t["id"] for t in detail["pareto_front"]}
    pg = make_page(page, len(trials))
    return {
        "study": detail,
        "objectives": objectives,
        "trials": trials[pg.offset : pg.offset + pg.per_page],
        "page": pg,
        "front_ids": front_ids,
        "pareto": _study_pareto(trials, objectives, front_ids),
        "history": _history(trials, objectives),
        **study_analysis(trials, objectives, study_id),
    }


def study_analysis(
    trials: list[dict[str, Any]], objectives: list[str], study_id: int
) -> dict[str, Any]:
    """Parallel coordinates and slice plots of the complete trials; the fANOVA importances
    are fetched by the page from ``/studies/{id}/importance.json`` (they take a while)."""
    from api.web.analysis import parallel_plot, slice_plots

    n_complete = sum(t["status"] == "complete" for t in trials)
    src = f"/studies/{study_id}/importance.json?n={n_complete}"
    return {
        "parallel": parallel_plot(trials, objectives),
        "slices": slice_plots(trials, objectives),
        "importance": {"kind": "bars", "src": src, "labels": [], "series": []},
        "n_complete": n_complete,
    }


@lru_cache(maxsize=64)
def study_importance(optuna_name: str, objectives: tuple[str, ...], n_complete: int) -> Any:
    """fANOVA importances of a study as a bars chart spec (cached per number of complete
    trials: a refresh of a running study recomputes only when a trial finished)."""
    from api.web.analysis import importance_plot
    from search.study import param_importances  # the only optuna importer

    if n_complete < 3:
        return importance_plot({})
    try:
        return importance_plot(param_importances(optuna_name, list(objectives)))
    except Exception:  # noqa: BLE001 - an unreachable Optuna storage hides one chart
        return importance_plot({})


def trial_sbpp(trial: dict[str, Any]) -> float | None:
    vals = [
        r["state_bytes_per_param"] for r in trial["runs"] if _finite(r["state_bytes_per_param"])
    ]
    return sum(vals) / len(vals) if vals else None


def _study_pareto(
    trials: list[dict[str, Any]], objectives: list[str], front_ids: set[int]
) -> dict[str, Any]:
    """Complete trials as loss vs state bytes/param (objective values where they are those)."""
    points = []
    for t in trials:
        if t["status"] != "complete" or not t["values"]:
            continue
        vals = dict(zip(objectives, t["values"], strict=False))
        x = vals.get("state_bytes_per_param", trial_sbpp(t))
        y = vals.get("val_loss", t["values"][0])
        if _finite(x) and _finite(y):
            points.append(
                {
                    "x": x,
                    "y": y,
                    "label": f"trial {t['number']}" if t["id"] in front_ids else "",
                    "hash": t["recipe_hash"] or "",
                    "href": f"/recipes/{t['recipe_hash']}" if t["recipe_hash"] else "",
                    "pareto": t["id"] in front_ids,
                }
            )
    return {
        "kind": "pareto",
        "x_label": "optimizer state bytes / param",
        "y_label": objectives[0] if "val_loss" not in objectives else "val loss",
        "points": points,
    }


def _history(trials: list[dict[str, Any]], objectives: list[str]) -> dict[str, Any]:
    """Optimization history: first objective per complete trial and its best so far."""
    pts = [
        [t["number"], t["values"][0]]
        for t in trials
        if t["status"] == "complete" and t["values"] and _finite(t["values"][0])
    ]
    best: list[list[float]] = []
    for n, v in pts:
        best.append([n, min(v, best[-1][1]) if best else v])
    series = []
    if pts:
        series = [
            {"label": objectives[0], "points": pts, "scatter": True},
            {"label": "best so far", "points": best, "stepped": True},
        ]
    return {"kind": "curves", "x_label": "trial", "y_label": objectives[0], "series": series,
            "x_integer": True}  # fmt: skip
