"""Property/fuzz test over the OpenAPI schema (schemathesis + hypothesis), every check.

Every operation, positive and negative cases, validated by ALL of schemathesis' checks (no 5xx,
status codes and content types declared, response bodies and headers match the schema, invalid
data rejected, valid data accepted, unsupported methods 405 ...): 0 failures. Runs the ASGI app
in-process on the migrated Postgres database (Postgres refuses values SQLite accepts: NUL bytes,
out-of-range integers), auth off, with messages not sent. schemathesis' pytest plugin does not
run under pytest 9, so operations are driven directly.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig

pytestmark = pytest.mark.integration
EXAMPLES_PER_OPERATION = 8
# Schema-valid data may still break a rule a JSON schema cannot state (a preset name that does
# not exist, a cap from the settings, exactly one of two fields): 422 with the field, like 404.
POSITIVE_OK = ["2xx", "401", "403", "404", "409", "422"]


def all_checks() -> list[Any]:
    load_all_checks()
    return [c for c in CHECKS.get_all() if not isinstance(c, type)]


@pytest.fixture
def fuzz_schema(api_db: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    import core.broker

    monkeypatch.setattr(core.broker, "dispatch_run", lambda *a, **k: None)
    monkeypatch.setattr(core.broker, "dispatch_study_tick", lambda *a, **k: None)
    from api.main import create_app

    app = create_app(api_db.model_copy(update={"auth_mode": "off"}))
    config = SchemathesisConfig.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_OK}}}
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


def _fuzz(operation: Any, mode: GenerationMode, failures: list[str], codes: Counter[int]) -> None:
    checks = all_checks()

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    def run(case: Any) -> None:
        response = case.call()
        codes[response.status_code] += 1
        try:
            case.validate_response(response, checks=checks)
        except BaseException as exc:  # noqa: BLE001 - schemathesis' FailureGroup: collect all
            failures.append(f"{operation.label} [{mode.value}] {exc}"[:2000])

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (an operation without inputs)
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_no_server_errors(fuzz_schema: Any) -> None:
    failures: list[str] = []
    codes: Counter[int] = Counter()
    labels, start = [], time.monotonic()
    for result in fuzz_schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        for mode in GenerationMode:
            _fuzz(operation, mode, failures, codes)
    print(f"fuzzed {len(labels)} operations: status codes {dict(codes)}")
    assert {"POST /v1/experiments", "GET /v1/leaderboard"} <= set(labels)
    assert codes.total() >= 5 * len(labels), codes
    # the generator reached both handlers and validation, not just one of them
    assert sum(n for c, n in codes.items() if c < 300) > len(labels), codes
    assert codes[422] > 0, codes
    assert len(all_checks()) >= 10  # every built-in check ran, not a subset
    assert not failures, "\n".join(failures[:10])
    assert time.monotonic() - start < 120


_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


_ascii = st.characters(min_codepoint=33, max_codepoint=126)


def _bodies() -> Any:
    names = st.sampled_from(["adamw", "lion", "sinkgd", "nope", "adamw\x00"])
    ref = st.one_of(
        names,
        st.fixed_dictionaries({"preset": names}, optional={"name": st.text(max_size=140)}),
        st.fixed_dictionaries({"recipe": _json}),
        _json,
    )
    return st.fixed_dictionaries(
        {
            "recipes": st.lists(ref, min_size=0, max_size=3),
            "workload": st.sampled_from(["synthetic-lm", "shakespeare-lm", "nope", ""]),
        },
        optional={
            "steps": st.integers(min_value=-5, max_value=2**40),
            "seeds": st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=4),
            "lr": st.floats(allow_nan=True, allow_infinity=True),
            "lr_grid": st.lists(st.floats(), max_size=3),
            "queue": st.sampled_from(["cpu", "gpu", "tpu"]),
            "name": st.text(max_size=210),
        },
    )


def test_experiment_bodies_never_5xx(api_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Near-valid experiment specs (real preset names, odd values) get 202/409/422, never 5xx."""
    from fastapi.testclient import TestClient

    import core.broker
    from api.main import create_app

    monkeypatch.setattr(core.broker, "dispatch_run", lambda *a, **k: None)
    codes: Counter[int] = Counter()
    with TestClient(create_app(api_db.model_copy(update={"auth_mode": "off"}))) as client:

        @settings(max_examples=60, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(body=_bodies(), key=st.none() | st.text(_ascii, min_size=1, max_size=8))
        def run(body: dict[str, Any], key: str | None) -> None:
            headers = {"Content-Type": "application/json"}
            if key:
                headers["Idempotency-Key"] = key
            # json.dumps writes NaN/Infinity tokens, which Python servers parse: test those too
            r = client.post("/v1/experiments", content=json.dumps(body), headers=headers)
            codes[r.status_code] += 1
            assert r.status_code in (202, 409, 422), (r.status_code, r.text[:300], body)

        run()
    print(f"experiment bodies: status codes {dict(codes)}")
    assert codes[202] > 0 and codes[422] > 0, codes
