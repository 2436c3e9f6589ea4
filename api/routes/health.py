"""GET /v1/health: liveness plus a database round trip (no secrets in the answer)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import text

from api.deps import SessionDep, SettingsDep
from api.schemas import HealthPublic

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=HealthPublic,
    responses={
        503: {
            "model": HealthPublic,
            "description": "degraded: the database does not answer",
            "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}},
        }
    },
)
def health(session: SessionDep, settings: SettingsDep, response: Response) -> HealthPublic:
    """Service status, database reachability, backend and auth mode.

    503 with ``status: degraded`` and ``Retry-After`` while the database does not answer; the
    next request after it is back answers 200 again (the pool pings before reuse).
    """
    import optforge

    try:
        session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is "the database is down"
        database = f"error: {exc.__class__.__name__}"
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        response.headers["Retry-After"] = str(settings.retry_after_s)
    return HealthPublic(
        status="ok" if database == "ok" else "degraded",
        version=optforge.__version__,
        database=database,
        backend=settings.database_url.split(":", 1)[0].split("+", 1)[0],
        broker=settings.broker_url.split(":", 1)[0],
        embedded=settings.embedded,
        auth_mode=settings.auth_mode,
    )
