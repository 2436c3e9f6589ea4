"""Study routes (/v1/studies): start, list, inspect and cancel Optuna searches over recipes.

``POST /v1/studies`` validates the spec (design space, objectives, sampler, limits), inserts the
study and runs its first scheduler tick (ask + dispatch of the first ``parallelism`` trials);
workers drive it from there (``optforge.study_tick``). No torch/optuna import at module level.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import get_settings
from search.scheduler import StudySpec

router = APIRouter(prefix="/studies", tags=["studies"])


def _session() -> Iterator[Session]:
    from core.db import get_sessionmaker

    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


def _fallback_write_auth(
    authorization: str | None = Header(None), x_api_key: str | None = Header(None)
) -> str | None:
    """API-key check (``Authorization: Bearer <key>`` or ``X-API-Key``) per settings.auth_mode."""
    if get_settings().auth_mode == "off":
        return None
    key = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
    if not key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "an API key is required")
    from core.db import get_sessionmaker
    from core.models import ApiKey

    digest = hashlib.sha256(key.encode()).hexdigest()
    with get_sessionmaker()() as session:
        row = session.scalars(
            select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
        ).first()
    if row is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key")
    return row.name


def _pick_deps() -> tuple[Any, Any]:
    """The API engineer's shared deps when present (api/deps.py), else the local ones."""
    import importlib

    try:
        deps = importlib.import_module("api.deps")
    except ImportError:
        return _session, _fallback_write_auth
    return getattr(deps, "get_session", _session), getattr(
        deps, "require_write", _fallback_write_auth
    )


get_session, require_write = _pick_deps()


def _detail(session: Session, study_id: int) -> dict[str, Any]:
    from search.study_view import study_detail

    try:
        return study_detail(session, study_id)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.post("", status_code=status.HTTP_201_CREATED)
def create(
    spec: StudySpec,
    session: Session = Depends(get_session),
    owner: str | None = Depends(require_write),
) -> dict[str, Any]:
    """Start a study; returns the study with its first trials asked."""
    from search.scheduler import create_study, tick
    from search.space import SpaceError

    try:
        study = create_study(session, spec, owner=owner if isinstance(owner, str) else None)
        session.commit()
    except (SpaceError, ValueError) as exc:
        session.rollback()
        raise HTTPException(422, str(exc)) from exc
    tick(study.id)
    session.expire_all()
    return _detail(session, study.id)


@router.get("")
def index(
    limit: int = Query(100, ge=1, le=1000), session: Session = Depends(get_session)
) -> list[dict[str, Any]]:
    """Studies, newest first, with progress counts."""
    from search.study_view import list_studies

    return list_studies(session, limit=limit)


@router.get("/{study_id}")
def show(study_id: int, session: Session = Depends(get_session)) -> dict[str, Any]:
    """Progress counts, best trials and the Pareto front (with recipes)."""
    return _detail(session, study_id)


@router.get("/{study_id}/trials")
def trials(study_id: int, session: Session = Depends(get_session)) -> list[dict[str, Any]]:
    """Every trial with its params, status/reason, values, recipe and runs."""
    from core.models import SearchStudy
    from search.study_view import trial_dicts

    if session.get(SearchStudy, study_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no study {study_id}")
    return trial_dicts(session, study_id)


@router.post("/{study_id}/cancel")
def cancel(
    study_id: int,
    session: Session = Depends(get_session),
    _owner: str | None = Depends(require_write),
) -> dict[str, Any]:
    """Cancel a running study (queued runs cancelled, running runs asked to stop)."""
    from search.scheduler import cancel_study

    try:
        cancel_study(session, study_id)
        session.commit()
    except LookupError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return _detail(session, study_id)
