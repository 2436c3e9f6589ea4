"""``/openapi.json``, ``/docs`` (Swagger UI) and ``/redoc``, guarded like the pages.

FastAPI's own routes for these are switched off (``create_app``) so that under
``auth_mode=all`` they need a key or a login session too (the login page otherwise); in the
other modes they are public. Swagger UI is served from ``/static/vendor/swagger-ui`` (vendored,
no CDN); ``/redoc`` redirects to it (ReDoc is not vendored, and FastAPI's page loads it and
its fonts from CDNs, so it would be blank offline).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from api.web.auth import PageRoute

OPENAPI_URL = "/openapi.json"
SWAGGER = "/static/vendor/swagger-ui"

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get(OPENAPI_URL)
def openapi(request: Request) -> JSONResponse:
    """The OpenAPI document of the JSON API."""
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def swagger(request: Request) -> HTMLResponse:
    """Interactive API docs (Swagger UI)."""
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER}/swagger-ui.css",
        swagger_favicon_url="data:,",  # FastAPI's default favicon is fetched from its site
        swagger_ui_parameters={"validatorUrl": None},  # no badge from validator.swagger.io
    )


@router.get("/redoc")
def redoc() -> RedirectResponse:
    """The API reference is Swagger UI at ``/docs`` (works offline)."""
    return RedirectResponse("/docs", status_code=307)
