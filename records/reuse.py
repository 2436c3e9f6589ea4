"""Shared by experiments and studies: recipe rows and reuse of stored run results.

An identical run (recipe, workload, steps, seed, lr, process layout) that already succeeded is
not retrained: the new run row becomes a succeeded copy with ``reused_from_id`` pointing at
the original.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.models import EVAL_PROTOCOL, METRIC_COLUMNS, Recipe, Run, RunStatus


def upsert_recipe_row(
    session: Session, name: str | None, canonical: dict[str, Any], digest: str
) -> Recipe:
    """The recipe row with hash ``digest`` (created if new; safe against concurrent inserts)."""
    row = session.scalars(select(Recipe).where(Recipe.hash == digest)).first()
    if row is not None:
        if row.name is None and name:
            row.name = name
        return row
    try:
        with session.begin_nested():
            row = Recipe(hash=digest, name=name, canonical=canonical)
            session.add(row)
            session.flush()
        return row
    except IntegrityError:  # inserted concurrently
        return session.scalars(select(Recipe).where(Recipe.hash == digest)).one()


def succeeded_twin(session: Session, run: Run) -> Run | None:
    """The oldest succeeded run identical to ``run`` (recipe, workload, steps, seed, lr, warmup,
    process layout)
    whose final loss was measured under the current evaluation protocol."""
    warmup = (
        Run.warmup_frac.is_(None)
        if run.warmup_frac is None
        else (Run.warmup_frac == run.warmup_frac)
    )
    return session.scalars(
        select(Run)
        .where(
            Run.recipe_id == run.recipe_id,
            Run.workload == run.workload,
            Run.steps == run.steps,
            Run.seed == run.seed,
            Run.lr == run.lr,
            warmup,
            Run.gpus == (run.gpus or 1),
            Run.parallel == (run.parallel or "none"),
            Run.eval_protocol == EVAL_PROTOCOL,
            Run.status == RunStatus.succeeded,
        )
        .order_by(Run.id)
        .limit(1)
    ).first()


def reuse_if_stored(session: Session, run: Run) -> bool:
    """Make ``run`` a succeeded copy of an identical stored result, if there is one."""
    prior = succeeded_twin(session, run)
    if prior is None:
        return False
    for col in (*METRIC_COLUMNS, "env"):
        setattr(run, col, getattr(prior, col))
    run.status = RunStatus.succeeded
    run.reused_from_id = prior.reused_from_id or prior.id
    run.finished_at = datetime.now(UTC)
    return True
