"""Runs: GET /v1/runs/{id}, GET /v1/runs/{id}/metrics, POST /v1/runs/{id}/cancel.

Unknown ids and finished runs are domain errors (NotFound, Conflict), mapped in api/errors.py.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import CallerDep, ReaderDep, SessionDep, ensure_owner
from api.schemas import RunMetricsPublic, RunPublic
from records import runs as run_views

router = APIRouter(prefix="/runs", tags=["runs"])
RunId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/{run_id}", response_model=RunPublic)
def get_run(run_id: RunId, session: SessionDep, _reader: ReaderDep) -> RunPublic:
    """A run: status, attempts, failure reason, final metrics and environment."""
    return RunPublic(**run_views.get_run(session, run_id))


@router.get("/{run_id}/metrics", response_model=RunMetricsPublic)
def get_metrics(
    run_id: RunId,
    session: SessionDep,
    _reader: ReaderDep,
    after_step: Annotated[int, Query(ge=-1, le=2**31 - 1)] = -1,
    limit: Annotated[int, Query(ge=1, le=run_views.METRICS_MAX)] = run_views.METRICS_MAX,
) -> RunMetricsPublic:
    """The run's curve (train/val loss, lr, tokens, time per step); poll with ``after_step``."""
    return RunMetricsPublic(**run_views.run_metrics(session, run_id, after_step, limit))


@router.post("/{run_id}/cancel", response_model=RunPublic)
def cancel(run_id: RunId, session: SessionDep, caller: CallerDep) -> RunPublic:
    """Cancel a queued run, or ask a running one to stop at its next step (409 if finished).

    Only the key that owns the run (its experiment, study or benchmark) or an admin key: 403.
    """
    ensure_owner(caller, run_views.run_owner(session, run_id), f"run {run_id}")
    run = run_views.cancel_run(session, run_id)
    session.commit()
    return RunPublic(**run)
