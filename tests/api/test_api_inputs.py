"""Bad input that used to pass: non-finite numbers, malformed JSON of any kind, NUL bytes,
GPU-sized studies on the cpu queue. Each is a 422 with the error envelope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

JSON = {"Content-Type": "application/json"}


def _envelope(r: Any, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == 422, (r.status_code, r.text[:300])
    body = r.json()
    assert isinstance(body["detail"], str) and body["errors"], body
    assert all({"field", "msg", "type"} <= set(e) for e in body["errors"]), body
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return dict(body)


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e999", "-1e400"])
def test_non_finite_lr_is_refused(open_client: TestClient, number: str) -> None:
    raw = json.dumps({"recipe": {"lr": "N", "design": {}}, "workload": "synthetic-lm"})
    raw = raw.replace('"N"', number)  # a literal JSON token, not a string
    _envelope(open_client.post("/v1/recipes/validate", content=raw, headers=JSON), "body")
    raw = json.dumps({"recipes": ["adamw"], "workload": "synthetic-lm", "lr": "N"})
    raw = raw.replace('"N"', number)
    _envelope(open_client.post("/v1/experiments", content=raw, headers=JSON), "body")


def test_non_finite_numbers_fail_in_the_models_too() -> None:
    """Python callers (CLI, bench, tests) get the same refusal without the HTTP layer."""
    from optim_core.recipe import Recipe
    from records.experiments import ExperimentCreate
    from search.space import load_space
    from search.spec import StudySpec

    inf = float("inf")
    for build in (
        lambda: Recipe.model_validate({"lr": inf, "design": {}}),
        lambda: Recipe.model_validate({"lr": 1e-3, "design": {"momentum": {"beta": inf}}}),
        lambda: ExperimentCreate.model_validate(
            {"recipes": ["adamw"], "workload": "synthetic-lm", "lr_grid": [1e-3, inf]}
        ),
        lambda: StudySpec.model_validate({"max_state_bytes_per_param": inf}),
    ):
        with pytest.raises(ValidationError, match="finite"):
            build()
    with pytest.raises(ValueError, match="finite"):
        load_space({"lr": {"low": 1e-4, "high": inf}})


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"[" * 1000 + b"]" * 1000, "nested deeper"),
        (b'{"recipes": ' + b"[" * 70 + b"]" * 70 + b"}", "nested deeper"),
        (b'{"recipes": ["adamw"], "workload": "synthetic-lm\xff"}', "UTF-8"),
        (b'{"recipes": ["adamw"], "workload": "synthetic-lm", "steps": ' + b"9" * 5000 + b"}",
         "out of range"),
        (b'{"recipes": ["adamw"], "workload": ', "invalid JSON"),
        (b"\xef\xbb\xbf{}", "invalid JSON"),
    ],
)  # fmt: skip
def test_malformed_json_is_422(open_client: TestClient, raw: bytes, words: str) -> None:
    body = _envelope(open_client.post("/v1/experiments", content=raw, headers=JSON), "body")
    assert words in body["detail"], body
    assert body["errors"][0]["type"] == "json_invalid"


def test_nul_bytes_are_refused_with_their_field(open_client: TestClient) -> None:
    spec = {"recipes": ["adamw"], "workload": "synthetic-lm", "steps": 5, "name": "a\x00b"}
    _envelope(open_client.post("/v1/experiments", json=spec), "body.name")
    spec = {"recipes": [{"preset": "adamw", "name": "x\x00"}], "workload": "synthetic-lm"}
    _envelope(open_client.post("/v1/experiments", json=spec), "body.recipes.0.name")
    _envelope(open_client.post("/v1/studies", json={"name": "\x00", "steps": 5}), "body.name")
    _envelope(open_client.post("/v1/recipes/validate", json={"preset": "adamw", "\x00": 1}))
    ok = open_client.post("/v1/recipes/validate", json={"preset": "adamw"})
    assert ok.status_code == 200, ok.text  # the guard lets a clean body through unchanged


def test_gpu_only_study_on_cpu_is_refused(open_client: TestClient) -> None:
    body = {"workload": "shakespeare-lm-20m", "steps": 10, "queue": "cpu"}
    r = _envelope(open_client.post("/v1/studies", json=body), "body.queue")
    assert "GPU-sized" in r["detail"]
    r = _envelope(open_client.post("/v1/studies", json={**body, "queue": None}))
    missing = {**body}
    del missing["queue"]  # the default queue is cpu: refused the same way
    _envelope(open_client.post("/v1/studies", json=missing), "body.queue")


def test_openapi_declares_every_error_with_the_real_envelope(open_client: TestClient) -> None:
    doc = open_client.get("/openapi.json").json()
    envelope = {"$ref": "#/components/schemas/ErrorBody"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]  # FastAPI's, not ours
    assert doc["components"]["schemas"]["ErrorBody"]["properties"]["detail"]["type"] == "string"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path == "/v1/health":
                continue
            codes = set(op["responses"])
            assert {"401", "403", "404", "422", "503"} <= codes, (method, path, codes)
            for code in ("422", "503"):
                schema = op["responses"][code]["content"]["application/json"]["schema"]
                assert schema == envelope, (method, path, code)
            assert "Retry-After" in op["responses"]["503"]["headers"]
            if method == "post":
                assert {"409", "413"} <= codes, (method, path)
    assert "503" in doc["paths"]["/v1/health"]["get"]["responses"]


def test_database_unavailable_is_503_not_500(data_dir: Path) -> None:
    """A database that cannot be opened stands for one that is restarting (real Postgres
    outages: tests/integration/test_svc_faults.py)."""
    from api.main import create_app
    from core.config import Settings

    broken = Settings(database_url=f"sqlite:///{data_dir}/missing-dir/x.db", auth_mode="off")
    with TestClient(create_app(broken), raise_server_exceptions=False) as client:
        for path in ("/v1/runs/1", "/v1/experiments", "/v1/leaderboard", "/v1/studies"):
            r = client.get(path)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["retry-after"] == "5" and "unavailable" in r.json()["detail"]
        health = client.get("/v1/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert health.headers["retry-after"] == "5"
