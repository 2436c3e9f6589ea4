"""/v1/benchmarks and the benchmark pages on a fresh SQLite DB: 202, precise 422s, 404s,
owner-only cancel, promotion of a study's Pareto trials, and the first scheduling tick."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

W = "synthetic-lm"
SPEC: dict[str, Any] = {
    "workload": W,
    "recipes": ["sinkgd"],
    "horizons": [10, 30],
    "seeds": [1, 2, 3],
    "tuning": {"budget": 3, "seed": 0, "parallelism": 2},
}


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import core.broker

    calls: list[int] = []
    monkeypatch.setattr(core.broker, "dispatch_benchmark_tick", calls.append)
    return calls


def _post(client: TestClient, auth: dict[str, str], body: dict[str, Any]) -> Any:
    return client.post("/v1/benchmarks", json=body, headers=auth)


def test_create_list_show_and_first_tick(
    client: TestClient, auth: dict[str, str], ticks: list[int]
) -> None:
    from search.bench_scheduler import tick

    resp = _post(client, auth, SPEC)
    assert resp.status_code == 202, resp.text
    bench = resp.json()
    assert ticks == [bench["id"]]  # sent by name after the commit
    assert bench["baseline"] == "adamw" and bench["status"] == "running"
    assert [(c["recipe"], c["horizon"]) for c in bench["cells"]] == [
        ("adamw", 10), ("adamw", 30), ("sinkgd", 10), ("sinkgd", 30),
    ]  # fmt: skip
    assert all(c["tuning"]["trials"] == 0 for c in bench["cells"])
    sent: list[int] = []
    counts = tick(bench["id"], dispatch=sent.append)
    assert len(sent) == 4 * 2  # parallelism 2 per cell, budget 3
    assert counts["runs"] == 8 and counts["runs_planned"] == 4 * (3 + 3)
    shown = client.get(f"/v1/benchmarks/{bench['id']}").json()
    assert all(c["tuning"]["trials"] == 2 for c in shown["cells"])
    assert [b["id"] for b in client.get("/v1/benchmarks").json()] == [bench["id"]]
    assert client.get("/v1/benchmarks/999").status_code == 404


@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        ({"tuning": {"budget": 0}}, "body.tuning.budget", "greater than or equal to 1"),
        ({"seeds": [1]}, "body.seeds", "at least 3 confirmation seeds"),
        ({"horizons": [10, 6000]}, "body.horizons.1", "exceeds the cap of 5000"),
        ({"recipes": ["nope"]}, "body.recipes.0.preset", "unknown preset 'nope'"),
        ({"baseline": "nope"}, "body.baseline.preset", "unknown preset 'nope'"),
        ({"seeds": [0, 1, 2]}, "body", "must not be a confirmation seed"),
        ({"horizons": [10, 10]}, "body.horizons", "distinct"),
        ({"workload": "nope"}, "body.workload", "unknown workload"),
        ({"tuning": {"budget": 300}}, "body", "max_benchmark_runs"),
        ({"extra": 1}, "body.extra", "Extra inputs"),
    ],
)
def test_bad_specs_get_precise_422s(
    client: TestClient, auth: dict[str, str], patch: dict[str, Any], field: str, words: str
) -> None:
    resp = _post(client, auth, {**SPEC, **patch})
    assert resp.status_code == 422, resp.text
    errors = resp.json()["errors"]
    assert errors[0]["field"] == field, errors
    assert words in errors[0]["msg"], errors


def test_writes_need_a_key_and_cancel_is_owner_only(
    client: TestClient, auth: dict[str, str], ticks: list[int]
) -> None:
    from core.db import session_scope
    from records.api_keys import create_api_key

    assert client.post("/v1/benchmarks", json=SPEC).status_code == 401
    bid = _post(client, auth, SPEC).json()["id"]
    with session_scope() as session:
        other = {"Authorization": f"Bearer {create_api_key(session, 'someone-else')}"}
    assert client.post(f"/v1/benchmarks/{bid}/cancel", headers=other).status_code in (403, 404)
    done = client.post(f"/v1/benchmarks/{bid}/cancel", headers=auth)
    assert done.status_code == 200 and done.json()["status"] == "cancelled"
    assert {c["phase"] for c in done.json()["cells"]} == {"failed"}


def _study_with_trials() -> int:
    import optim_core
    from core.db import session_scope
    from core.models import Recipe, SearchStudy, SearchTrial

    with session_scope() as session:
        study = SearchStudy(name="s", spec={}, optuna_study_name="o-1", workload=W, steps=10,
                            n_trials=3, status="completed")  # fmt: skip
        session.add(study)
        session.flush()
        points = {"lion": [2.0, 4.0], "sinkgd": [2.5, 0.5], "adamw": [3.0, 8.0]}
        for number, (name, values) in enumerate(points.items()):
            rec = optim_core.presets.get(name)
            row = Recipe(hash=rec.hash(), name=name, canonical=rec.canonical())
            session.add(row)
            session.flush()
            session.add(SearchTrial(study_id=study.id, number=number, recipe_id=row.id,
                                    params={}, status="complete", values=values))  # fmt: skip
        return study.id


def test_promote_a_studys_pareto_trials(
    client: TestClient, auth: dict[str, str], ticks: list[int]
) -> None:
    sid = _study_with_trials()
    body = {"horizons": [10], "seeds": [1, 2, 3], "tuning": {"budget": 2}}
    resp = client.post(f"/v1/studies/{sid}/benchmark", json=body, headers=auth)
    assert resp.status_code == 202, resp.text
    rep = resp.json()
    assert rep["origin"] == "study" and rep["workload"] == W
    # trials 0 (lion) and 1 (sinkgd) are on the front; 2 (adamw, dominated by 0) is not
    assert sorted({c["recipe"] for c in rep["cells"]}) == [
        "adamw", f"study {sid} / trial 0", f"study {sid} / trial 1",
    ]  # fmt: skip
    assert client.post("/v1/studies/999/benchmark", json=body, headers=auth).status_code == 404


def test_pages_render_the_table_plot_and_csv(
    client: TestClient, auth: dict[str, str], ticks: list[int]
) -> None:
    bid = _post(client, auth, SPEC).json()["id"]
    page = client.get(f"/benchmarks/{bid}")
    assert page.status_code == 200 and "Claims" in page.text and 'id="cells"' in page.text
    assert "Protocol:" in page.text and "sinkgd" in page.text
    assert client.get("/benchmarks").status_code == 200
    csv = client.get(f"/benchmarks/{bid}/cells.csv")
    assert csv.status_code == 200 and csv.text.splitlines()[0].startswith("recipe,arm,horizon")
    assert len(csv.text.splitlines()) == 1 + 4
    assert client.get("/benchmarks/12345").status_code == 404
    confirmed = client.get(f"/confirmed?workload={W}")
    assert confirmed.status_code == 200 and "No confirmed results" in confirmed.text
    nope = client.get("/confirmed?workload=nope")
    assert nope.status_code == 404 and W in nope.text
    listing = client.get("/benchmarks.csv")
    assert listing.status_code == 200 and listing.headers["content-type"].startswith("text/csv")
    assert listing.text.splitlines()[0].startswith("id,name,workload,status,origin,arms")
    assert len(listing.text.splitlines()) == 2
    assert 'href="/benchmarks.csv"' in client.get("/benchmarks").text


def test_confirmed_board_csv(
    client: TestClient, auth: dict[str, str], ticks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    import records.bench_report

    bid = _post(client, auth, SPEC).json()["id"]
    cells = client.get(f"/v1/benchmarks/{bid}").json()["cells"]
    claims = [{"benchmark_id": bid, "benchmark": "b", **c, "mean": 3.0, "ci95": [2.9, 3.1]}
              for c in cells]  # fmt: skip
    monkeypatch.setattr(records.bench_report, "confirmed_board", lambda s, w: claims)
    page = client.get(f"/confirmed?workload={W}").text
    assert f'href="/confirmed.csv?workload={W}"' in page
    got = client.get(f"/confirmed.csv?workload={W}")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    lines = got.text.splitlines()
    assert lines[0].startswith("benchmark_id,benchmark,recipe,arm,horizon") and len(lines) == 5
    assert client.get("/confirmed.csv?workload=nope").status_code == 404


def test_confirmed_view_lists_only_benchmarked_cells(
    client: TestClient, auth: dict[str, str], ticks: list[int]
) -> None:
    _post(client, auth, SPEC)  # running: nothing confirmed yet
    resp = client.get(f"/v1/leaderboard/confirmed?workload={W}")
    assert resp.status_code == 200
    assert resp.json() == {"workload": W, "evidence": "confirmed", "rows": []}
    assert client.get("/v1/leaderboard/confirmed?workload=nope").status_code == 404


def test_cli_submit_posts_the_spec_and_bad_specs_fail_in_one_line(
    client: TestClient,
    auth: dict[str, str],
    ticks: list[int],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx
    import yaml
    from typer.testing import CliRunner

    from optforge.cli import app

    def post(url: str, json: Any, headers: dict[str, str], timeout: float) -> Any:
        assert url.endswith("/v1/benchmarks")
        return client.post("/v1/benchmarks", json=json, headers=headers)

    monkeypatch.setattr(httpx, "post", post)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    key = auth["Authorization"].split()[1]
    ok = CliRunner().invoke(app, ["benchmark", str(spec), "--submit", "--key", key])
    assert ok.exit_code == 0, ok.output
    assert "benchmark 1 accepted" in ok.output and "/benchmarks/1" in ok.output
    spec.write_text(yaml.safe_dump({**SPEC, "seeds": [1]}))
    refused = CliRunner().invoke(app, ["benchmark", str(spec), "--submit", "--key", key])
    assert refused.exit_code == 1 and "error 422" in refused.output
    local = CliRunner().invoke(app, ["benchmark", str(spec)])  # embedded: validated before work
    assert local.exit_code == 2 and "at least 3 confirmation seeds" in local.output
    assert "Traceback" not in local.output
