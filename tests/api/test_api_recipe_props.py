"""Property test: near-valid recipes (both forms, odd values) never make /v1/recipes/validate
or /v1/experiments answer 5xx; valid ones report state bytes consistent with their hash."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NORMS = ["adam", "sign", "row", "col", "rms", "frobenius", "standardize", "sinkhorn", "ns", "svd"]
STAGES = ["adam", "ema", "rms", "row", "sign", "frobenius", "sinkhorn", "ns", "scale", "lowrank"]
_num = st.one_of(
    st.integers(-3, 10**6), st.floats(-10, 1e6, allow_nan=False), st.just(0.5), st.none()
)
_design = st.fixed_dictionaries(
    {"norms": st.lists(st.sampled_from([*NORMS, "bogus"]), max_size=3)},
    optional={
        "momentum": st.fixed_dictionaries(
            {},
            optional={
                "beta": _num,
                "placement": st.sampled_from(["none", "all", "matrices", "head"]),
                "position": st.sampled_from(["before_norm", "after_norm"]),
                "nesterov": st.booleans(),
            },
        ),
        "rank": _num,
        "projection": st.fixed_dictionaries(
            {}, optional={"basis": st.sampled_from(["svd", "gaussian"]), "refresh": _num}
        ),
        "state_bits": st.sampled_from([32, 16, 8, 4, 3]),
        "other": st.sampled_from(["adamw", "sgd", "sign", "same"]),
    },
)
_stage = st.builds(
    lambda kind, extra: {"type": kind, **extra},
    st.sampled_from(STAGES),
    st.dictionaries(st.sampled_from(["beta", "eps", "steps", "rank", "factor"]), _num, max_size=2),
)
_pipeline = st.fixed_dictionaries(
    {
        "routes": st.lists(
            st.fixed_dictionaries({"stages": st.lists(_stage, max_size=2)}), max_size=2
        )
    }
)
_recipes = st.one_of(
    st.fixed_dictionaries({"schema": st.just(1), "design": _design}, optional={"lr": _num}),
    st.fixed_dictionaries({"schema": st.just(1), "pipeline": _pipeline}, optional={"lr": _num}),
)


def test_recipes_never_5xx(open_client: TestClient) -> None:
    codes: dict[int, int] = {}
    seen: dict[str, int] = {}
    workloads = {w["name"]: w for w in open_client.get("/v1/workloads").json()}
    n_params = workloads["synthetic-lm"]["n_params"]

    @settings(max_examples=80, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(recipe=_recipes)
    def run(recipe: dict[str, Any]) -> None:
        r = open_client.post(
            "/v1/recipes/validate", json={"recipe": recipe, "workload": "synthetic-lm"}
        )
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
        assert r.status_code in (200, 422), (r.status_code, r.text[:300], recipe)
        if r.status_code == 200:
            body = r.json()
            assert body["state_bytes"] >= 0 and body["n_params"] == n_params
            # equal hashes mean equal optimizers, so equal analytical memory
            assert seen.setdefault(body["hash"], body["state_bytes"]) == body["state_bytes"]
        else:
            assert all(e["field"].startswith("body") for e in r.json()["errors"])

    run()
    assert codes.get(200, 0) > 0 and codes.get(422, 0) > 0, codes
