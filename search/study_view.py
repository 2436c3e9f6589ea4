"""Read side of studies (API, CLI, bench): progress, trials, best trials and the Pareto front.

Pure JSON-able dicts; no optuna import. The Pareto front is over complete trials' objective
values (all minimised): a trial is on the front when no other complete trial is <= in every
objective and < in one (Deb et al. 2002, non-dominated set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import NotFound
from core.models import Recipe, Run, SearchStudy, SearchTrial, TrialStatus
from records.runs import run_dict


def progress(session: Session, study_id: int) -> dict[str, int]:
    """Counts of a study's trials by status, plus ``n_trials`` and ``asked``."""
    study = session.get(SearchStudy, study_id)
    if study is None:
        raise NotFound(f"no study {study_id}")
    rows = session.scalars(select(SearchTrial.status).where(SearchTrial.study_id == study_id))
    counts = {s.value: 0 for s in TrialStatus}
    for status in rows:
        counts[status] = counts.get(status, 0) + 1
    counts["n_trials"] = study.n_trials
    counts["asked"] = sum(counts[s.value] for s in TrialStatus)
    return counts


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when ``a`` is no worse than ``b`` everywhere and better somewhere (minimisation)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def pareto_indices(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (duplicates all kept), in input order."""
    return [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p) for j, q in enumerate(points) if j != i)
    ]


def study_dict(study: SearchStudy) -> dict[str, Any]:
    spec = study.spec or {}
    return {
        "id": study.id,
        "name": study.name,
        "status": study.status,
        "workload": study.workload,
        "steps": study.steps,
        "n_trials": study.n_trials,
        "parallelism": study.parallelism,
        "sampler": study.sampler,
        "seed": study.seed,
        "objectives": spec.get("objectives"),
        "seeds": spec.get("seeds"),
        "max_state_bytes_per_param": spec.get("max_state_bytes_per_param"),
        "optuna_study_name": study.optuna_study_name,
        "created_at": study.created_at.isoformat() if study.created_at else None,
        "finished_at": study.finished_at.isoformat() if study.finished_at else None,
    }


def trial_dicts(session: Session, study_id: int) -> list[dict[str, Any]]:
    """All trials of a study with their runs and recipes (NotFound: no such study)."""
    if session.get(SearchStudy, study_id) is None:
        raise NotFound(f"no study {study_id}")
    trials = session.scalars(
        select(SearchTrial).where(SearchTrial.study_id == study_id).order_by(SearchTrial.number)
    ).all()
    ids = [t.id for t in trials]
    runs = session.scalars(select(Run).where(Run.trial_id.in_(ids)).order_by(Run.id)).all()
    by_trial: dict[int, list[Run]] = {}
    for r in runs:
        by_trial.setdefault(r.trial_id or 0, []).append(r)
    recipe_ids = {t.recipe_id for t in trials if t.recipe_id is not None}
    recipes = {
        r.id: r for r in session.scalars(select(Recipe).where(Recipe.id.in_(recipe_ids))).all()
    }
    out = []
    for t in trials:
        recipe = recipes.get(t.recipe_id) if t.recipe_id else None
        out.append(
            {
                "id": t.id,
                "number": t.number,
                "status": t.status,
                "values": t.values,
                "params": t.params,
                "failure_reason": t.failure_reason,
                "pruned_step": t.pruned_step,
                "attempts": t.attempts,
                "recipe_id": t.recipe_id,
                "recipe_hash": recipe.hash if recipe else None,
                "recipe": recipe.canonical if recipe else None,
                "runs": [run_dict(r, recipe) for r in by_trial.get(t.id, [])],
            }
        )
    return out


def study_detail(session: Session, study_id: int, n_best: int = 5) -> dict[str, Any]:
    """Study + progress counts + best trials + Pareto front (with recipes)."""
    study = session.get(SearchStudy, study_id)
    if study is None:
        raise NotFound(f"no study {study_id}")
    trials = trial_dicts(session, study_id)
    complete = [t for t in trials if t["status"] == "complete" and t["values"]]
    max_bytes = (study.spec or {}).get("max_state_bytes_per_param")
    objectives = (study.spec or {}).get("objectives") or []
    feasible = [t for t in complete if _feasible(t, objectives, max_bytes)]
    front = [feasible[i] for i in pareto_indices([t["values"] for t in feasible])]
    front.sort(key=lambda t: t["values"][::-1])
    best = sorted(feasible, key=lambda t: t["values"][0])[:n_best]
    return {
        **study_dict(study),
        "progress": progress(session, study_id),
        "best_trials": best,
        "pareto_front": front,
    }


def _feasible(trial: dict[str, Any], objectives: list[str], max_bytes: float | None) -> bool:
    if max_bytes is None:
        return True
    sbpp = [r["state_bytes_per_param"] for r in trial["runs"] if r["state_bytes_per_param"]]
    return not sbpp or sum(sbpp) / len(sbpp) <= max_bytes


def list_studies(session: Session, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """One page of studies, newest first, with progress counts."""
    stmt = select(SearchStudy).order_by(SearchStudy.id.desc()).limit(limit).offset(offset)
    rows = session.scalars(stmt).all()
    return [{**study_dict(s), "progress": progress(session, s.id)} for s in rows]
