"""Search feeds benchmarks: a study's Pareto candidates become the arms of a benchmark.

A study is exploration (one seed per trial, the tuning seed reused, results at one horizon);
promoting its Pareto-optimal trials to a benchmark re-tunes them against a baseline with the same
budget and confirms them on fresh seeds, which is what a claim needs.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import Invalid, NotFound
from core.models import Recipe, SearchStudy, SearchTrial, TrialStatus
from search.bench_spec import BenchmarkSpec
from search.study_view import pareto_indices


def pareto_trials(session: Session, study_id: int) -> list[SearchTrial]:
    """Complete trials of the study on its Pareto front, best first (lowest first objective)."""
    trials = session.scalars(
        select(SearchTrial)
        .where(SearchTrial.study_id == study_id, SearchTrial.status == TrialStatus.complete)
        .order_by(SearchTrial.number)
    ).all()
    scored = [t for t in trials if t.values]
    front = [scored[i] for i in pareto_indices([list(t.values or []) for t in scored])]
    return sorted(front, key=lambda t: (list(t.values or []), t.number))


def promotion_spec(session: Session, study_id: int, body: dict[str, Any]) -> BenchmarkSpec:
    """The benchmark spec for ``study_id``'s best Pareto trials (NotFound: no such study;
    Invalid: nothing to promote or an invalid spec)."""
    study = session.get(SearchStudy, study_id)
    if study is None:
        raise NotFound(f"no study {study_id}")
    limit = int(body.pop("max_candidates", 3))
    arms = []
    for trial in pareto_trials(session, study_id)[:limit]:
        recipe = session.get_one(Recipe, trial.recipe_id)
        arms.append(
            {"recipe": dict(recipe.canonical), "name": f"study {study_id} / trial {trial.number}"}
        )
    if not arms:
        raise Invalid(f"study {study_id} has no complete trial to promote yet")
    name = body.pop("name", None) or f"study {study_id} candidates"
    try:
        return BenchmarkSpec.model_validate(
            {**body, "name": name, "workload": study.workload, "recipes": arms}
        )
    except ValidationError as exc:
        raise Invalid.from_pydantic(exc.errors()) from None
