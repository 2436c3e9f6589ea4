"""Web pages without a browser: 200/404 of every page, empty states, pagination, chart data."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from web_seed import STEPS, STUDY_STEPS, WORKLOAD, Seeded, create_schema, seed_board, seed_study


@pytest.fixture
def client(data_dir: Path) -> Iterator[TestClient]:
    from api.main import create_app
    from core.config import get_settings
    from core.db import get_engine

    settings = get_settings()
    settings.ensure_dirs()
    create_schema(get_engine(settings.database_url))
    with TestClient(create_app()) as c:
        yield c


def _seed(extra_recipes: int = 0, study_status: str = "completed") -> Seeded:
    from core.db import session_scope

    with session_scope() as session:
        seeded = seed_board(session, extra_recipes=extra_recipes)
        seed_study(session, seeded, status=study_status)
    return seeded


def chart_data(html: str, chart_id: str) -> dict[str, Any]:
    m = re.search(
        rf'<script type="application/json" id="{chart_id}-data">(.*?)</script>', html, re.S
    )
    assert m, f"no chart {chart_id}"
    return json.loads(m.group(1))  # type: ignore[no-any-return]


def table_rows(html: str, table_id: str) -> list[str]:
    m = re.search(rf'<table class="data" id="{table_id}">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert m, f"no table {table_id}"
    return re.findall(r"<tr[ >].*?</tr>", m.group(1), re.S)


def test_empty_states(client: TestClient) -> None:
    home = client.get("/")
    assert home.status_code == 200 and "text/html" in home.headers["content-type"]
    assert 'id="empty-board"' in home.text and "No runs yet" in home.text
    assert "<canvas" not in home.text
    assert "No studies yet" in client.get("/studies").text
    compare = client.get("/compare")
    assert compare.status_code == 200 and "Enter run ids" in compare.text


@pytest.mark.parametrize(
    "path",
    ["/runs/999", "/runs/abc", "/runs/\u00b2", "/runs/99999999999999999999", "/studies/999",
     "/studies/x1", "/studies/\u00b2", "/recipes/deadbeef", "/compare?runs=998,999"],
)  # fmt: skip
def test_unknown_ids_are_404_pages(client: TestClient, path: str) -> None:
    _seed()
    r = client.get(path)
    assert r.status_code == 404
    assert "text/html" in r.headers["content-type"] and "404 · not found" in r.text


def test_unknown_paths_get_the_page_in_a_browser_and_json_elsewhere(client: TestClient) -> None:
    page = client.get("/no/such/page", headers={"accept": "text/html,*/*"})
    assert page.status_code == 404 and "404 · not found" in page.text
    api = client.get("/v1/no-such-endpoint", headers={"accept": "text/html,*/*"})
    assert api.status_code == 404 and api.headers["content-type"] == "application/json"
    plain = client.get("/no/such/page", headers={"accept": "application/json"})
    assert plain.status_code == 404 and "detail" in plain.json()


def test_leaderboard_rows_and_pareto_plot(client: TestClient) -> None:
    seeded = _seed()
    html = client.get("/").text
    rows = table_rows(html, "leaderboard")
    assert len(rows) == 5
    assert "adamw" in rows[0] and ">1<" in rows[0]  # lowest mean val loss ranks first
    assert "3.11 ± 0.014" in rows[0]  # mean and sample std of 3.10 and 3.12
    plot = chart_data(html, "pareto-plot")
    assert len(plot["points"]) == 5
    by_label = {p["label"]: p for p in plot["points"]}
    assert {"adamw", "sinkgd", "adam8bit", "galore"} <= set(by_label)
    # the unnamed recipe was proposed by the study (its trial 4): labelled with Optuna's number
    assert f"study {seeded.study_id} / trial 4" in by_label
    front = {p["label"] for p in plot["points"] if p["pareto"]}
    assert front == {"adamw", "sinkgd", "adam8bit"}  # galore and the unnamed one are dominated
    assert all(p["href"] == f"/recipes/{p['hash']}" for p in plot["points"])
    assert set(seeded.recipe_hashes) == {p["hash"] for p in plot["points"]}
    assert f"{WORKLOAD}|{STUDY_STEPS}" in html  # the selector offers the study's board too


def test_leaderboard_selector_picks_board(client: TestClient) -> None:
    _seed()
    html = client.get("/", params={"workload": WORKLOAD, "steps": STUDY_STEPS}).text
    assert f'{WORKLOAD} · {STUDY_STEPS} steps <a class="csv"' in html
    assert len(chart_data(html, "pareto-plot")["points"]) == 3  # the three complete trials
    unknown = client.get("/", params={"workload": "nope", "steps": 5})
    assert unknown.status_code == 404 and "There is no workload <code>nope</code>" in unknown.text
    assert 'href="/?workload=synthetic-lm"' in unknown.text  # the valid names, as links
    empty = client.get("/", params={"workload": "digits-mlp", "steps": 5})
    assert empty.status_code == 200 and "No succeeded runs for digits-mlp" in empty.text


def test_leaderboard_pagination(client: TestClient) -> None:
    _seed(extra_recipes=30)
    first = client.get("/").text
    assert len(table_rows(first, "leaderboard")) == 25
    assert "page 1 of 2 (35 rows)" in first and 'rel="next"' in first
    assert len(chart_data(first, "pareto-plot")["points"]) == 35  # the plot shows every recipe
    second = client.get("/", params={"workload": WORKLOAD, "steps": STEPS, "page": 2}).text
    rows = table_rows(second, "leaderboard")
    assert len(rows) == 10 and ">26<" in rows[0] and ">35<" in rows[-1]
    assert 'rel="prev"' in second and 'rel="next"' not in second
    clamped = client.get("/", params={"workload": WORKLOAD, "steps": STEPS, "page": 99}).text
    assert "page 2 of 2" in clamped


def test_run_page_curves_metrics_failure(client: TestClient) -> None:
    seeded = _seed()
    ok = client.get(f"/runs/{seeded.run_ids[0]}")
    assert ok.status_code == 200
    step = chart_data(ok.text, "curve-step")
    labels = [s["label"] for s in step["series"]]
    assert labels == [f"run {seeded.run_ids[0]} train", f"run {seeded.run_ids[0]} val"]
    assert len(step["series"][0]["points"]) == 8 and len(step["series"][1]["points"]) == 4
    assert chart_data(ok.text, "curve-time")["x_label"] == "wall time (s)"
    assert "norms: Adam (second-moment) scaling" in ok.text
    text = unescape(ok.text)
    assert "state_bits: 32" in text and '"state_bits": 32' in text  # YAML and JSON
    assert "2.13.0" in ok.text and 'http-equiv="refresh"' not in ok.text
    failed = client.get(f"/runs/{seeded.failed_run_id}").text
    assert 'id="failure-reason"' in failed and "CUDA out of memory at step 3" in failed
    running = client.get(f"/runs/{seeded.running_run_id}").text
    assert 'http-equiv="refresh"' in running and 'id="no-curve"' in running


def test_compare_overlays_and_ignores_unknown(client: TestClient) -> None:
    seeded = _seed()
    a, b = seeded.run_ids[0], seeded.run_ids[2]
    r = client.get("/compare", params={"runs": f"{a}, {b},999,x"})
    assert r.status_code == 200
    series = chart_data(r.text, "compare-step")["series"]
    assert len(series) == 4 and series[0]["label"].startswith(f"#{a} adamw")
    assert "Unknown run ids ignored: 999" in r.text
    seeds = client.get("/compare", params={"runs": f"{a},{seeded.run_ids[1]},{b}"}).text
    bands = [s["label"] for s in chart_data(seeds, "compare-bands")["series"]]
    assert bands[:3] == ["adamw val (mean of 2)", "adamw val ± std", "adamw val - std"]
    assert bands[3:] == ["sinkgd val"]  # one seed: its own line, no band


def test_recipe_page_snippet_and_runs(client: TestClient) -> None:
    seeded = _seed()
    r = client.get(f"/recipes/{seeded.recipe_hashes[1]}")
    assert r.status_code == 200 and "Recipe sinkgd" in r.text
    snippet = re.search(r'<pre class="code" id="snippet">(.*?)</pre>', r.text, re.S)
    assert snippet
    code = unescape(snippet.group(1))
    tree = ast.parse(code)  # valid Python
    call = tree.body[1].value  # type: ignore[attr-defined]
    literal = ast.literal_eval(call.args[0])
    from core.db import session_scope

    with session_scope() as session:
        assert literal == _recipe(session, seeded.recipe_hashes[1]).canonical
    assert "optim_core.build(recipe, model)" in code
    assert "Runs (3)" in r.text and "/compare?runs=" in r.text  # 2 seeds + 1 study trial


def _recipe(session: Session, h: str) -> Any:
    from sqlalchemy import select

    from core.models import Recipe

    return session.scalars(select(Recipe).where(Recipe.hash == h)).one()


def test_recipe_runs_pagination(client: TestClient) -> None:
    from web_seed import add_run

    from core.db import session_scope

    seeded = _seed()
    with session_scope() as session:
        recipe = _recipe(session, seeded.recipe_hashes[3])
        for seed in range(10, 37):  # 27 more: 30 with the 2 seeds and 1 study trial
            add_run(session, recipe, seed, 3.3, 1.0, n_points=0)
    first = client.get(f"/recipes/{seeded.recipe_hashes[3]}").text
    assert "Runs (30)" in first and "page 1 of 2 (30 rows)" in first
    second = client.get(f"/recipes/{seeded.recipe_hashes[3]}", params={"page": 2}).text
    assert second.count('<a href="/runs/') == 5  # the last 5 runs


def test_study_page_progress_front_trials(client: TestClient) -> None:
    seeded = _seed(study_status="running")
    r = client.get(f"/studies/{seeded.study_id}")
    assert r.status_code == 200
    assert 'http-equiv="refresh"' in r.text  # auto-refresh while running
    assert "<b>3</b> done · <b>0</b> running · <b>1</b> pruned · <b>1</b> failed" in r.text
    front = re.search(r'<ul class="front-list" id="pareto-front">(.*?)</ul>', r.text, re.S)
    assert front and front.group(1).count("<li>") == 2
    pareto = chart_data(r.text, "study-pareto")
    assert len(pareto["points"]) == 3
    assert sorted(p["label"] for p in pareto["points"] if p["pareto"]) == ["trial 0", "trial 1"]
    history = chart_data(r.text, "study-history")
    assert history["series"][1]["points"] == [[0, 3.2], [1, 3.1], [2, 3.1]]
    assert len(table_rows(r.text, "trials")) == 5
    assert "diverged: loss is nan" in r.text and "pruned at step 20" in r.text
    listing = client.get("/studies").text
    assert f'href="/studies/{seeded.study_id}"' in listing


def test_completed_study_does_not_refresh(client: TestClient) -> None:
    seeded = _seed(study_status="completed")
    assert 'http-equiv="refresh"' not in client.get(f"/studies/{seeded.study_id}").text


def test_static_assets_served_locally(client: TestClient) -> None:
    lib = client.get("/static/vendor/chart.umd.min.js")
    assert lib.status_code == 200 and "Chart.js v4" in lib.text[:200]
    assert client.get("/static/optforge.js").status_code == 200
    assert client.get("/static/optforge.css").status_code == 200
    _seed()
    html = client.get("/").text
    srcs = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert srcs and all(s.startswith("/static/") or s.startswith("data:") for s in srcs)


def test_bad_query_values_render_not_422(client: TestClient) -> None:
    seeded = _seed()
    for path in ("/?steps=abc&page=x", "/studies?page=-3", f"/recipes/{seeded.recipe_hashes[0]}?page=zz",
                 f"/studies/{seeded.study_id}?page=0", "/compare?runs=,,a", "/?page=\u00b2",
                 "/compare?runs=\u00b2,99999999999999999999"):  # fmt: skip
        r = client.get(path)
        assert r.status_code == 200, path
        assert "text/html" in r.headers["content-type"]
    assert "page 1 of" not in client.get("/?steps=abc&page=x").text  # 5 rows: one page, no pager


def test_study_trials_pagination(client: TestClient) -> None:
    from core.db import session_scope
    from core.models import SearchTrial

    seeded = _seed()
    with session_scope() as session:
        for number in range(5, 32):  # 32 trials in all
            session.add(SearchTrial(study_id=seeded.study_id, number=number, status="running"))
    first = client.get(f"/studies/{seeded.study_id}").text
    assert len(table_rows(first, "trials")) == 25 and "page 1 of 2 (32 rows)" in first
    assert "<b>27</b> running" in first
    second = client.get(f"/studies/{seeded.study_id}", params={"page": 2}).text
    rows = table_rows(second, "trials")
    assert len(rows) == 7 and "/ trial 25<" in rows[0] and "/ trial 31<" in rows[-1]
    assert len(chart_data(second, "study-pareto")["points"]) == 3  # plots cover every page


def test_leaderboard_sort_links(client: TestClient) -> None:
    _seed()
    params: dict[str, Any] = {"workload": WORKLOAD, "steps": STEPS}
    by_bytes = client.get("/", params={**params, "sort": "state_bytes_per_param"}).text
    rows = table_rows(by_bytes, "leaderboard")
    assert "sinkgd" in rows[0] and "adamw" in rows[-1]  # 0.5 B/param first, 8 last
    assert "sort=-state_bytes_per_param" in by_bytes  # clicking again reverses
    reverse = table_rows(
        client.get("/", params={**params, "sort": "-val_loss"}).text, "leaderboard"
    )
    assert "adamw" in reverse[-1]
    bad = client.get("/", params={**params, "sort": "nope"})
    assert bad.status_code == 200 and "adamw" in table_rows(bad.text, "leaderboard")[0]


def test_leaderboard_steps_to_target_column(client: TestClient) -> None:
    _seed()
    rows = table_rows(client.get("/").text, "leaderboard")
    assert re.search(r'<td class="n">30</td>', rows[0])  # adamw reached the target at step 30
    assert re.search(r'<td class="n">—</td>', rows[3])  # galore never did


def test_board_counts_trained_apart_from_reused_and_one_seed_has_no_spread(
    client: TestClient,
) -> None:
    from web_seed import add_run

    from core.db import session_scope

    seeded = _seed()
    with session_scope() as session:  # a second submission of adamw seed 0: a reused copy
        add_run(session, _recipe(session, seeded.recipe_hashes[0]), 0, 3.10, 8.0,
                reused_from_id=seeded.run_ids[0])  # fmt: skip
    html = client.get("/").text
    assert f"{WORKLOAD} · {STEPS} steps (10 trained, 1 reused)" in html
    assert f"{WORKLOAD} · {STUDY_STEPS} steps (3 trained)" in html
    assert "3.11 ± 0.014" in table_rows(html, "leaderboard")[0]  # the copy is not a 3rd seed
    study_board = client.get("/", params={"workload": WORKLOAD, "steps": STUDY_STEPS}).text
    rows = table_rows(study_board, "leaderboard")
    assert len(rows) == 3 and not any("±" in r for r in rows)  # one seed each: no "± 0"


def test_times_are_utc_to_the_second_and_trial_params_are_short(client: TestClient) -> None:
    from datetime import datetime

    from core.db import session_scope
    from core.models import Run, SearchTrial

    seeded = _seed()
    with session_scope() as session:
        run = session.get_one(Run, seeded.run_ids[0])
        run.finished_at = datetime(2026, 12, 1, 20, 5, 12, 123456)
        trial = session.query(SearchTrial).filter_by(study_id=seeded.study_id, number=0).one()
        trial.params = {"lr": 0.0123456789, "norms": ["row", "col"], "state_bits": 32}
    page = client.get(f"/runs/{seeded.run_ids[0]}").text
    metrics = re.search(r'<table class="kv" id="metrics">(.*?)</table>', page, re.S)
    assert metrics and "/ 2026-12-01 20:05:12Z</td>" in metrics.group(1)
    stamps = re.findall(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[^ <]*", metrics.group(1))
    assert len(stamps) == 2 and all(re.fullmatch(r".{19}Z", s) for s in stamps), stamps
    study = client.get(f"/studies/{seeded.study_id}").text
    first = table_rows(study, "trials")[0]
    assert '<span class="param"><b>lr</b> 0.01235</span>' in first
    assert '<span class="param"><b>norms</b> row&gt;col</span>' in first


def test_a_multi_process_run_shows_its_layout(client: TestClient) -> None:
    from core.db import session_scope
    from core.models import Run

    seeded = _seed()
    one = client.get(f"/runs/{seeded.run_ids[0]}").text
    assert "processes" not in one
    with session_scope() as session:
        run = session.get_one(Run, seeded.run_ids[0])
        run.gpus, run.parallel = 2, "fsdp"
    assert "· 2 processes (fsdp)" in client.get(f"/runs/{seeded.run_ids[0]}").text
    api = client.get(f"/v1/runs/{seeded.run_ids[0]}").json()
    assert (api["gpus"], api["parallel"]) == (2, "fsdp")
