"""Experiments: POST /v1/experiments (202, runs queued), GET /v1/experiments[/{id}].

The rows are committed before any message is sent, so a worker never sees a missing run; a
broker that is down leaves the runs queued for the reaper to re-send (still 202). Errors are
domain errors (``core.errors``), mapped to HTTP once in api/errors.py.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, status

from api.deps import CallerDep, ReaderDep, SessionDep, WriterDep, ensure_owner
from api.schemas import ExperimentPublic, ExperimentSummaryPublic
from core.broker import dispatch_runs
from core.models import Experiment
from records import runs as run_views
from records.experiments import ExperimentCreate, create_experiment

router = APIRouter(prefix="/experiments", tags=["experiments"])
ExperimentId = Annotated[int, Path(ge=1, le=2**31 - 1)]


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
    exp, to_dispatch = create_experiment(
        session, spec, owner=owner, idempotency_key=idempotency_key
    )
    body = ExperimentPublic(**run_views.experiment_record(exp))  # the rows in hand, not re-read
    session.commit()
    queued = set(to_dispatch)
    dispatch_runs(session, [(r.id, r.queue) for r in exp.runs if r.id in queued])
    return body


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
    return ExperimentPublic(**run_views.experiment_dict(session, experiment_id))


@router.post("/{experiment_id}/cancel", response_model=ExperimentPublic)
def cancel_experiment(
    experiment_id: ExperimentId, session: SessionDep, caller: CallerDep
) -> ExperimentPublic:
    """Cancel every queued or running run of the experiment (finished runs stay as they are).

    Only the key that submitted it or an admin key (403 otherwise).
    """
    owner = run_views.owner_of(session, Experiment, experiment_id)
    ensure_owner(caller, owner, f"experiment {experiment_id}")
    body = ExperimentPublic(**run_views.cancel_experiment(session, experiment_id))
    session.commit()
    return body
