"""The one mapping of domain errors to HTTP (api/errors.py): status, envelope, field paths."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.errors import install_handlers
from core.errors import Conflict, DomainError, Invalid, NotFound

RAISED: dict[str, DomainError] = {
    "missing": NotFound("no run 7"),
    "busy": Conflict("run 7 is already succeeded"),
    "bad": Invalid("unknown preset 'x'; valid: adamw", ("recipes", 1, "preset"), ["adamw"]),
}


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    install_handlers(app)

    @app.get("/raise/{kind}")
    def get(kind: str) -> None:
        raise RAISED[kind]

    @app.post("/raise/{kind}")
    def post(kind: str) -> None:
        raise RAISED[kind]

    return TestClient(app)


def test_not_found_and_conflict_are_404_and_409_with_the_detail(client: TestClient) -> None:
    missing = client.get("/raise/missing")
    assert missing.status_code == 404 and missing.json() == {"detail": "no run 7"}
    busy = client.post("/raise/busy")
    assert busy.status_code == 409 and busy.json() == {"detail": "run 7 is already succeeded"}


def test_invalid_is_422_with_field_paths_under_body_or_query(client: TestClient) -> None:
    posted = client.post("/raise/bad")
    assert posted.status_code == 422
    (err,) = posted.json()["errors"]
    assert err["field"] == "body.recipes.1.preset" and err["valid"] == ["adamw"]
    assert posted.json()["detail"].startswith("unknown preset 'x'")
    got = client.get("/raise/bad")
    assert got.status_code == 422 and got.json()["errors"][0]["field"] == "query.recipes.1.preset"
