"""Runs: GET /v1/runs/{id}, GET /v1/runs/{id}/metrics, POST /v1/runs/{id}/cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlalchemy.orm import Session

from api.deps import CallerDep, ReaderDep, SessionDep, ensure_owner
from api.schemas import RunMetricsPublic, RunPublic
from records import runs as run_views

router = APIRouter(prefix="/runs", tags=["runs"])
RunId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _not_found(exc: LookupError) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0] if exc.args else exc))


@router.get("/{run_id}", response_model=RunPublic)
def get_run(run_id: RunId, session: SessionDep, _reader: ReaderDep) -> RunPublic:
    """A run: status, attempts, failure reason, final metrics and environment."""
    try:
        return RunPublic(**run_views.get_run(session, run_id))
    except LookupError as exc:
        raise _not_found(exc) from exc


@router.get("/{run_id}/metrics", response_model=RunMetricsPublic)
def get_metrics(
    run_id: RunId,
    session: SessionDep,
    _reader: ReaderDep,
    after_step: Annotated[int, Query(ge=-1, le=2**31 - 1)] = -1,
    limit: Annotated[int, Query(ge=1, le=run_views.METRICS_MAX)] = run_views.METRICS_MAX,
) -> RunMetricsPublic:
    """The run's curve (train/val loss, lr, tokens, time per step); poll with ``after_step``."""
    try:
        return RunMetricsPublic(**run_views.run_metrics(session, run_id, after_step, limit))
    except LookupError as exc:
        raise _not_found(exc) from exc


def run_owner(session: Session, run_id: int) -> str | None:
    """The owner of a run: its experiment's, study's or benchmark's (404 if no such run)."""
    from core.models import Run

    run = session.get(Run, run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id}")
    if run.experiment is not None:
        return run.experiment.owner
    if run.trial is not None:
        return run.trial.study.owner
    if run.cell is not None:
        return run.cell.benchmark.owner
    return None


@router.post("/{run_id}/cancel", response_model=RunPublic)
def cancel(run_id: RunId, session: SessionDep, caller: CallerDep) -> RunPublic:
    """Cancel a queued run, or ask a running one to stop at its next step (409 if finished).

    Only the key that owns the run (its experiment, study or benchmark) or an admin key: 403.
    """
    ensure_owner(caller, run_owner(session, run_id), f"run {run_id}")
    try:
        run = run_views.cancel_run(session, run_id)
        session.commit()
    except LookupError as exc:
        session.rollback()
        raise _not_found(exc) from exc
    except run_views.RunStateError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return RunPublic(**run)
