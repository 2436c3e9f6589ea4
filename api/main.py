"""The FastAPI application factory: JSON API under /v1, web pages at /, static files.

``uvicorn --factory api.main:create_app``; no app is built at import time. Importing this
module never imports torch, optim_core or workers (recipes go through ``records.recipes``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from api.errors import BodySizeLimit, JsonGuard, install_handlers
from core.config import Settings, get_settings

STATIC_DIR = Path(__file__).resolve().parent / "web" / "static"

DESCRIPTION = """Design and search memory-efficient optimizers for LLM training.

Writes need `Authorization: Bearer <key>` (`optforge keys create --name NAME`); reads are public
unless the server runs with `OPTFORGE_AUTH_MODE=all`. Errors are `{"detail": "...",
"errors": [{"field", "msg", "valid"?}]}`.
"""


def _v1_router() -> APIRouter:
    from api.error_docs import READ_CODES, WRITE_CODES, responses
    from api.routes import (
        benchmarks,
        experiments,
        health,
        leaderboard,
        presets,
        recipes,
        runs,
        studies,
        workloads,
    )

    v1 = APIRouter(prefix="/v1")
    v1.include_router(health.router)  # declares its own 503 (the health body, degraded)
    for module in (presets, workloads, leaderboard):
        v1.include_router(module.router, responses=responses(READ_CODES))
    for module in (recipes, experiments, runs, studies, benchmarks):
        v1.include_router(module.router, responses=responses(WRITE_CODES))
    return v1


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app bound to ``settings`` (default: the process settings)."""
    import optforge
    from core.db import get_sessionmaker

    settings = settings or get_settings()
    app = FastAPI(
        title="optforge",
        version=optforge.__version__,
        description=DESCRIPTION,
        # Served by api.web.docs instead, guarded like the pages under auth_mode=all.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    if settings.database_url.startswith("sqlite"):
        settings.ensure_dirs()
    app.state.sessionmaker = get_sessionmaker(settings.database_url)
    install_handlers(app)
    app.add_middleware(JsonGuard)  # inner: sees only bodies within the size limit
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.include_router(_v1_router())
    _mount_web(app)
    return app


def _mount_web(app: FastAPI) -> None:
    from api.web import router as web_router
    from api.web.docs import router as docs_router

    app.include_router(docs_router)
    app.include_router(web_router)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
