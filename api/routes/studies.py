"""Study routes (/v1/studies): start, list, inspect and cancel Optuna searches over recipes.

``POST /v1/studies`` validates the spec (design space, objectives, sampler, limits), inserts the
study, commits, and sends ``optforge.study_tick`` by name: a worker's first tick asks the first
``parallelism`` trials and dispatches their runs; workers drive the study from there (every
finished run sends another tick, and the reaper ticks running studies). The API never imports
workers; optim_core (space validation) and optuna (cancel) are imported lazily by search.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from api.deps import CallerDep, ReaderDep, SessionDep, WriterDep, ensure_owner
from core.models import SearchStudy
from records.runs import owner_of
from search.scheduler import cancel_study, create_study
from search.spec import StudySpec
from search.study_view import list_studies, study_detail, trial_dicts

router = APIRouter(prefix="/studies", tags=["studies"])
log = logging.getLogger("optforge.api")
StudyId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def send_first_tick(study_id: int) -> None:
    """Hand the study to the workers (tests patch this to tick in-process).

    A broker that is down is not the client's fault: the study is committed and the reaper
    ticks every running study, so the request still succeeds.
    """
    from core.broker import dispatch_study_tick

    try:
        dispatch_study_tick(study_id)
    except Exception as exc:  # noqa: BLE001 - the reaper ticks running studies
        log.warning("first tick of study %s not sent (reaper will tick it): %s", study_id, exc)


@router.post("", status_code=status.HTTP_201_CREATED)
def create(spec: StudySpec, session: SessionDep, owner: WriterDep) -> dict[str, Any]:
    """Start a study: 201 with the study (trials appear as workers tick it); 422 if invalid."""
    study = create_study(session, spec, owner=owner)  # SpaceError, StudySpecError: Invalid
    session.commit()
    send_first_tick(study.id)
    session.expire_all()
    return study_detail(session, study.id)


@router.get("")
def index(
    session: SessionDep,
    _reader: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[dict[str, Any]]:
    """Studies, newest first, with progress counts (paginated by ``limit``/``offset``)."""
    return list_studies(session, limit=limit, offset=offset)


@router.get("/{study_id}")
def show(study_id: StudyId, session: SessionDep, _reader: ReaderDep) -> dict[str, Any]:
    """Progress counts, best trials and the Pareto front (with recipes)."""
    return study_detail(session, study_id)


@router.get("/{study_id}/trials")
def trials(study_id: StudyId, session: SessionDep, _reader: ReaderDep) -> list[dict[str, Any]]:
    """Every trial with its params, status/reason, values, recipe and runs."""
    return trial_dicts(session, study_id)


@router.post("/{study_id}/cancel")
def cancel(study_id: StudyId, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    """Cancel a running study (queued runs cancelled, running runs asked to stop).

    Only the key that started the study or an admin key (403 otherwise).
    """
    ensure_owner(caller, owner_of(session, SearchStudy, study_id), f"study {study_id}")
    cancel_study(session, study_id)
    session.commit()
    return study_detail(session, study_id)
