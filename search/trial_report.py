"""What a decided trial tells Optuna besides its values: learning curve and links (no optuna).

``trial_report(trial, runs)`` -> ``{"intermediate": {step: val loss}, "user_attrs": {...}}``,
given to :func:`search.study.tell`, so optuna-dashboard on the study storage shows each trial's
learning curve (the mean validation loss over the trial's seeds at every evaluation step) and
links it to its optforge run, recipe and study page.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from core.models import Recipe, Run, RunMetric, SearchTrial


def mean_val_curve(session: Session, runs: list[Run]) -> dict[int, float]:
    """Eval step -> mean finite val loss over the runs (a reused run reads its source's curve)."""
    ids = [r.reused_from_id or r.id for r in runs]
    rows = session.execute(
        select(RunMetric.step, RunMetric.val_loss)
        .where(RunMetric.run_id.in_(ids), RunMetric.val_loss.is_not(None))
        .order_by(RunMetric.step)
    ).all()
    by_step: dict[int, list[float]] = {}
    for step, val in rows:
        if val is not None and math.isfinite(val):
            by_step.setdefault(int(step), []).append(float(val))
    return {step: sum(v) / len(v) for step, v in by_step.items()}


def trial_links(session: Session, trial: SearchTrial, runs: list[Run]) -> dict[str, Any]:
    """User attributes: ``run_id``(s), ``recipe_hash``, page URLs and the optforge label."""
    from core.config import get_settings

    base = get_settings().public_url.rstrip("/")
    recipe = session.get(Recipe, trial.recipe_id) if trial.recipe_id else None
    attrs: dict[str, Any] = {
        "optforge": f"study {trial.study_id} / trial {trial.number}",
        "study_url": f"{base}/studies/{trial.study_id}",
    }
    if runs:
        attrs["run_id"] = runs[0].id
        attrs["run_url"] = f"{base}/runs/{runs[0].id}"
        attrs["run_ids"] = [r.id for r in runs]
    if recipe is not None:
        attrs["recipe_hash"] = recipe.hash
        attrs["recipe_url"] = f"{base}/recipes/{recipe.hash}"
    return attrs


def trial_report(trial: SearchTrial, runs: list[Run]) -> dict[str, Any]:
    """Keyword arguments for ``search.study.tell``: intermediate values and user attributes."""
    session = object_session(trial)
    if session is None:
        return {}
    return {
        "intermediate": mean_val_curve(session, runs),
        "user_attrs": trial_links(session, trial, runs),
    }
