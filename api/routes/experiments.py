"""Experiments: POST /v1/experiments (202, runs queued), GET /v1/experiments[/{id}].

The rows are committed before any message is sent, so a worker never sees a missing run; a
broker that is down leaves the runs queued for the reaper to re-send (still 202).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, status
from sqlalchemy import select

from api.deps import CallerDep, ReaderDep, SessionDep, WriterDep, ensure_owner
from api.errors import unprocessable
from api.schemas import ExperimentPublic, ExperimentSummaryPublic
from records import runs as run_views
from records.experiments import ExperimentCreate, IdempotencyConflictError, create_experiment

router = APIRouter(prefix="/experiments", tags=["experiments"])
log = logging.getLogger("optforge.api")
ExperimentId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _dispatch(session: Any, run_ids: list[int]) -> None:
    from core.broker import dispatch_run

    queues = run_views.run_queues(session, run_ids)
    for run_id in run_ids:
        queue = queues.get(run_id, "cpu")
        try:
            dispatch_run(run_id, queue)
        except Exception as exc:  # noqa: BLE001 - the reaper re-sends queued runs
            log.warning("dispatch of run %s failed (reaper will retry): %s", run_id, exc)


def _create(session: Any, spec: ExperimentCreate, owner: str | None, key: str | None) -> Any:
    try:
        exp, to_dispatch = create_experiment(session, spec, owner=owner, idempotency_key=key)
        session.commit()
    except IdempotencyConflictError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except ValueError as exc:
        session.rollback()
        raise unprocessable(exc) from exc
    return exp, to_dispatch


@router.post("", response_model=ExperimentPublic, status_code=status.HTTP_202_ACCEPTED)
def submit(
    spec: ExperimentCreate,
    session: SessionDep,
    owner: WriterDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> ExperimentPublic:
    """Queue runs for recipes × seeds × lrs; identical finished runs are reused, not retrained.

    A repeated ``Idempotency-Key`` returns the experiment it created the first time.
    """
    exp, to_dispatch = _create(session, spec, owner, idempotency_key)
    _dispatch(session, list(to_dispatch))
    session.expire_all()
    return ExperimentPublic(**run_views.experiment_dict(session, exp.id))


@router.get("", response_model=list[ExperimentSummaryPublic])
def list_experiments(
    session: SessionDep,
    _reader: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[ExperimentSummaryPublic]:
    """Experiments, newest first, with run counts per status."""
    rows = run_views.list_experiments(session, limit=limit, offset=offset)
    return [ExperimentSummaryPublic(**r) for r in rows]


@router.get("/{experiment_id}", response_model=ExperimentPublic)
def get_experiment(
    experiment_id: ExperimentId, session: SessionDep, _reader: ReaderDep
) -> ExperimentPublic:
    """The submitted spec, its runs (status, results) and counts per status."""
    try:
        return ExperimentPublic(**run_views.experiment_dict(session, experiment_id))
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from exc


@router.post("/{experiment_id}/cancel", response_model=ExperimentPublic)
def cancel_experiment(
    experiment_id: ExperimentId, session: SessionDep, caller: CallerDep
) -> ExperimentPublic:
    """Cancel every queued or running run of the experiment (finished runs stay as they are).

    Only the key that submitted it or an admin key (403 otherwise).
    """
    from core.models import Experiment, Run, RunStatus

    exp = session.get(Experiment, experiment_id)
    if exp is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no experiment {experiment_id}")
    ensure_owner(caller, exp.owner, f"experiment {experiment_id}")
    live = (RunStatus.queued, RunStatus.running)
    run_ids = session.scalars(
        select(Run.id).where(Run.experiment_id == experiment_id, Run.status.in_(live))
    ).all()
    for run_id in run_ids:
        try:
            run_views.cancel_run(session, run_id)
        except run_views.RunStateError:  # finished meanwhile
            continue
    session.commit()
    session.expire_all()
    return ExperimentPublic(**run_views.experiment_dict(session, experiment_id))
