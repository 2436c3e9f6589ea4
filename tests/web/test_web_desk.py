"""The researcher's walk in headless Chromium (Debian's package) against a live uvicorn + SQLite:
submit an experiment -> its page -> a run page -> a study page with parallel coordinates,
fANOVA importance and slice plots -> CSV download; no console errors, no external request.

The study is real (scheduler + Optuna in its own SQLite storage); its runs and the submitted
experiment's runs are completed by test_scheduler's synthetic executor (claim, curve, result).
Screenshots go to artifacts/screenshots/desk-*.png (gitignored).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_uvicorn import live_uvicorn
from test_web_browser import Console, _chromium, chart_points, shot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "search"))
from test_scheduler import CRAFTED_SPACE, drive, execute, new_study  # noqa: E402

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A live server on a database with one finished 8-trial study; env shared with the test."""
    from settings_reset import reset_settings_caches

    from core.db import get_engine
    from core.models import Base

    chromium = _chromium()
    tmp = tmp_path_factory.mktemp("desk")
    env = {"OPTFORGE_DATA_DIR": str(tmp), "OPTFORGE_DATABASE_URL": f"sqlite:///{tmp / 'o.db'}",
           "OPTFORGE_OPTUNA_STORAGE_URL": f"sqlite:///{tmp / 'optuna.db'}",
           "OPTFORGE_AUTH_MODE": "off"}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        reset_settings_caches()
        Base.metadata.create_all(get_engine())
        sid = new_study(space=CRAFTED_SPACE, steps=12, n_trials=8, parallelism=2,
                        sampler="random", seed=11, pruning=False)  # fmt: skip
        drive(sid)
        with live_uvicorn({**os.environ, **env}, tmp / "uvicorn.log") as url:
            yield {"url": url, "study_id": sid, "chromium": chromium, "tmp": tmp}
    reset_settings_caches()


@pytest.fixture
def browser_page(desk: dict[str, Any]) -> Iterator[tuple[Any, Console, list[str]]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=desk["chromium"], args=["--no-sandbox"])
        ctx = b.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        pg = ctx.new_page()
        external: list[str] = []
        pg.on("request", lambda r: external.append(r.url)
              if not r.url.startswith((desk["url"], "data:", "blob:")) else None)  # fmt: skip
        try:
            yield pg, Console(pg), external
        finally:
            ctx.close()
            b.close()


def _submit(pg: Any) -> dict[str, Any]:
    """POST /v1/experiments from the page itself (auth off), as a script on the site would."""
    body = {"recipes": ["adamw", "sinkgd"], "workload": "synthetic-lm", "steps": 12,
            "seeds": [0, 1], "name": "desk walk"}  # fmt: skip
    js = """async (body) => { const r = await fetch('/v1/experiments', {method: 'POST',
              headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
              return {status: r.status, json: await r.json()}; }"""
    out: dict[str, Any] = pg.evaluate(js, body)
    return out


def _queued_experiment(pg: Any, url: str) -> tuple[dict[str, Any], list[int]]:
    """Submit 2 recipes x 2 seeds; queued, not trained yet, the "running now" page and the
    experiment page show them live. Returns the experiment and its run ids."""
    pg.goto(f"{url}/compare")  # a page that does not refresh itself
    resp = _submit(pg)
    assert resp["status"] == 202, resp
    exp = resp["json"]
    run_ids = [r["id"] for r in exp["runs"]]
    assert len(run_ids) == 4
    pg.goto(f"{url}/running")
    assert pg.locator("#running-runs tbody tr").count() == 4
    pg.goto(f"{url}/experiments/{exp['id']}")
    assert pg.locator('meta[http-equiv="refresh"]').count() == 1
    assert "workload: synthetic-lm" in pg.locator("#experiment-spec").inner_text()
    assert pg.locator("#experiment-runs .s-queued").count() == 4
    shot(pg, "desk-experiment-queued")
    return exp, run_ids


def _finished_experiment(pg: Any, url: str, exp: dict[str, Any], run_ids: list[int]) -> None:
    """Train the runs; the experiment page stops refreshing and draws the mean ± std bands."""
    for run_id in run_ids:  # a worker would do this
        assert execute(run_id) == "succeeded"
    pg.goto(f"{url}/experiments/{exp['id']}")
    assert pg.locator('meta[http-equiv="refresh"]').count() == 0  # all finished
    assert "4 trained, 0 reused" in " ".join(pg.locator("#experiment-counts").inner_text().split())
    pg.wait_for_selector('canvas#experiment-bands[data-rendered="1"]')
    labels = pg.evaluate(
        "window.optforgeCharts['experiment-bands'].data.datasets.map(d => d.label)"
    )
    assert "adamw val (mean of 2)" in labels and "adamw val ± std" in labels
    shot(pg, "desk-experiment")


def _run_page(pg: Any, url: str, exp: dict[str, Any], run_id: int) -> None:
    """From the experiment's run list to the run page, which links back to the experiment."""
    pg.locator(f"#experiment-runs a[href='/runs/{run_id}']").click()
    pg.wait_for_url(f"{url}/runs/{run_id}")
    pg.wait_for_selector('canvas#curve-step[data-rendered="1"]')
    assert pg.locator("#run-experiment").get_attribute("href") == f"/experiments/{exp['id']}"
    shot(pg, "desk-run")


def _study_page(pg: Any, url: str, sid: int) -> None:
    """A trial's run page links back to the study, whose charts all render."""
    # a study trial's run links to its study as "study N / trial k" (Optuna's number)
    pg.goto(f"{url}/studies/{sid}")
    first_run = pg.locator("#trials tbody tr").first.locator("a[href^='/runs/']").first
    first_run.click()
    pg.wait_for_selector("#run-trial a")
    assert pg.locator("#run-trial").inner_text() == f"study {sid} / trial 0"
    pg.locator("#run-trial a").click()
    pg.wait_for_url(f"{url}/studies/{sid}")

    pg.wait_for_selector('canvas#study-parallel[data-rendered="1"]')
    # fANOVA runs when the page asks (/studies/{id}/importance.json): ~4 s of CPU, much more
    # wall time on a loaded machine
    pg.wait_for_selector('canvas#study-importance[data-rendered="1"]', timeout=240_000)
    pg.wait_for_selector('canvas#study-slice-1[data-rendered="1"]')
    axes = pg.evaluate("window.optforgeCharts['study-parallel'].data.labels")
    assert {"lr", "norms"} <= set(axes) and axes[-2:] == ["val_loss", "state_bytes_per_param"]
    assert chart_points(pg, "study-parallel", 0) == len(axes)
    lines = pg.evaluate("window.optforgeCharts['study-parallel'].data.datasets.length")
    assert lines == 8  # one line per complete trial
    bars = pg.evaluate("window.optforgeCharts['study-importance'].data")
    assert set(bars["labels"]) == {"lr", "norms"}
    assert abs(sum(bars["datasets"][0]["data"]) - 1.0) < 0.01  # fANOVA importances sum to 1
    shot(pg, "desk-study")


def _trials_csv(pg: Any, sid: int) -> None:
    """The study's trials.csv downloads with one complete row per trial."""
    with pg.expect_download() as info:
        pg.locator(f"a.csv[href='/studies/{sid}/trials.csv']").click()
    download = info.value
    assert download.failure() is None
    assert download.suggested_filename == f"study-{sid}-trials.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert len(rows) == 8 and {"number", "val_loss", "param_lr", "run_ids"} <= set(rows[0])
    assert all(r["status"] == "complete" and float(r["val_loss"]) > 0 for r in rows)


def test_submit_experiment_run_study_csv(desk: dict[str, Any], browser_page: Any) -> None:
    url, sid = desk["url"], desk["study_id"]
    pg, console, external = browser_page
    exp, run_ids = _queued_experiment(pg, url)
    _finished_experiment(pg, url, exp, run_ids)
    _run_page(pg, url, exp, run_ids[0])
    _study_page(pg, url, sid)
    _trials_csv(pg, sid)
    assert console.errors == []
    assert external == []


def test_every_table_has_a_working_csv(desk: dict[str, Any], browser_page: Any) -> None:
    url, sid = desk["url"], desk["study_id"]
    pg, console, external = browser_page
    pages = ["/", "/studies", f"/studies/{sid}", "/running"]
    for path in pages:
        pg.goto(f"{url}{path}")
        links = pg.locator("a.csv")
        assert links.count() >= 1, path
        for i in range(links.count()):
            href = links.nth(i).get_attribute("href")
            got = pg.request.get(f"{url}{href}")
            assert got.status == 200 and got.headers["content-type"].startswith("text/csv")
            assert len(got.text().splitlines()) >= 2, (path, href)  # header + rows
    board = pg.request.get(f"{url}/leaderboard.csv").text()
    assert "study " in board and "/ trial " in board  # trial recipes carry their label
    assert json.loads(pg.request.get(f"{url}/v1/health").text())["status"] == "ok"
    assert console.errors == []
    assert external == []


def test_api_docs_render_offline(desk: dict[str, Any], browser_page: Any) -> None:
    """Swagger UI at /docs is vendored: it renders the API with no request to another host."""
    url = desk["url"]
    pg, console, external = browser_page
    pg.goto(f"{url}/docs")
    pg.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=60_000)
    paths = pg.locator(".swagger-ui .opblock-summary-path").all_inner_texts()
    assert any("/v1/experiments" in p for p in paths), paths
    shot(pg, "desk-docs")
    pg.goto(f"{url}/redoc")  # ReDoc is not vendored: the same page
    pg.wait_for_url(f"{url}/docs")
    assert console.errors == []
    assert external == []
