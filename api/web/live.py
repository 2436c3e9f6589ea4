"""Data of the experiment page and the "running now" page (plain dicts; no FastAPI, no torch)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.web.analysis import band_series
from api.web.views import curve, curves_plot, recipe_row, run_row
from core.models import TERMINAL_STATUSES, Experiment, Run, RunMetric, RunStatus

LIVE = (RunStatus.queued.value, RunStatus.running.value)
RECENT = 10  # finished runs listed under the live ones


def run_counts(runs: list[Run]) -> dict[str, Any]:
    """Counts by status, and trained runs separately from reused copies."""
    return {
        "by_status": dict(Counter(str(r.status) for r in runs)),
        "total": len(runs),
        "reused": sum(r.reused_from_id is not None for r in runs),
        "trained": sum(r.reused_from_id is None and r.status in TERMINAL_STATUSES for r in runs),
        "live": sum(r.status in LIVE for r in runs),
    }


def seed_bands(session: Session, runs: list[Run]) -> dict[str, Any]:
    """Curves of runs that differ only by seed, as mean ± std bands (by step)."""
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.recipe_id, r.lr, r.workload, r.steps), []).append(r)
    series: list[dict[str, Any]] = []
    for group in groups.values():
        first = group[0]
        label = first.recipe.name or first.recipe.hash[:8]
        if len({g.lr for g in runs if g.recipe_id == first.recipe_id}) > 1:
            label += f" lr {first.lr:.3g}"
        curves = [c for c in (curve(session, r.reused_from_id or r.id) for r in group) if c]
        if curves:
            series += band_series(label, curves, "val") or band_series(label, curves, "train")
    return curves_plot(series, "step")


def experiment_view(session: Session, experiment_id: int) -> dict[str, Any]:
    exp = session.get(Experiment, experiment_id)
    if exp is None:
        raise LookupError(f"no experiment {experiment_id}")
    runs = sorted(exp.runs, key=lambda r: r.id)
    counts = run_counts(runs)
    return {
        "experiment": {
            "id": exp.id,
            "owner": exp.owner,
            "origin": exp.origin,
            "created_at": exp.created_at,
            "spec": exp.spec,
        },
        "runs": [
            {**run_row(r), "recipe": recipe_row(r.recipe), "progress": progress_of(session, r)}
            for r in runs
        ],  # fmt: skip
        "counts": counts,
        "live": counts["live"] > 0,
        "bands": seed_bands(session, runs),
    }


def progress_of(session: Session, run: Run) -> int:
    """The newest stored step of a run (its source's steps for a reused copy)."""
    if run.status == RunStatus.succeeded:
        return run.steps
    if run.status in TERMINAL_STATUSES:
        return run.stopped_step or 0
    step = session.scalar(select(func.max(RunMetric.step)).where(RunMetric.run_id == run.id))
    return int(step or 0)


def running_view(session: Session) -> dict[str, Any]:
    """Queued and running runs (oldest first) and the most recently finished ones."""
    live = session.scalars(select(Run).where(Run.status.in_(LIVE)).order_by(Run.id)).all()
    recent = session.scalars(
        select(Run)
        .where(Run.status.in_([s.value for s in TERMINAL_STATUSES]))
        .order_by(Run.id.desc())
        .limit(RECENT)
    ).all()

    def row(r: Run) -> dict[str, Any]:
        return {**run_row(r), "recipe": recipe_row(r.recipe), "progress": progress_of(session, r)}

    return {
        "live": [row(r) for r in live],
        "recent": [row(r) for r in recent],
        "n_running": sum(r.status == RunStatus.running for r in live),
        "n_queued": sum(r.status == RunStatus.queued for r in live),
    }
