"""The web pages in headless Chromium (Debian's package) against a live uvicorn + SQLite.

Checks what a person sees: leaderboard rows and a chart with one point per recipe, clicks that
navigate, the study's Pareto front, curves on run/compare pages, and no console errors.
Screenshots go to artifacts/screenshots/ (gitignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_uvicorn import live_uvicorn
from web_seed import Seeded, create_schema, seed_board, seed_study

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    reason = "headless Chromium (Debian package `chromium`) is not installed"
    if os.environ.get("OPTFORGE_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded]]:
    """A live ``uvicorn --factory api.main:create_app`` on a seeded SQLite file (auth off)."""
    from sqlalchemy.orm import Session

    from core.db import make_engine

    chromium = _chromium()
    assert chromium
    tmp = tmp_path_factory.mktemp("web-live")
    db_url = f"sqlite:///{tmp / 'web.db'}"
    engine = make_engine(db_url)
    create_schema(engine)
    with Session(engine) as session:
        seeded = seed_board(session)
        seed_study(session, seeded, status="running")
        session.commit()
    engine.dispose()
    env = {**os.environ, "OPTFORGE_DATA_DIR": str(tmp), "OPTFORGE_DATABASE_URL": db_url,
           "OPTFORGE_AUTH_MODE": "off"}  # fmt: skip
    with live_uvicorn(env, tmp / "uvicorn.log") as url:
        yield url, seeded


@pytest.fixture(scope="module")
def browser(site: tuple[str, Seeded]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Console:
    """Console errors and uncaught exceptions of one page."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", self._uncaught)

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(msg.text)

    def _uncaught(self, exc: Any) -> None:
        self.errors.append(f"uncaught: {exc}")


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, Console]]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    console = Console(pg)
    try:
        yield pg, console
    finally:
        ctx.close()


def shot(pg: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def open_charts(pg: Any, url: str, *charts: str) -> None:
    """Go to ``url`` and wait until each chart canvas named in ``charts`` has rendered."""
    pg.goto(url)
    for chart in charts:
        pg.wait_for_selector(f'canvas#{chart}[data-rendered="1"]')


def chart_points(pg: Any, chart_id: str, dataset: int) -> int:
    """Points Chart.js actually laid out for one dataset of one chart."""
    js = f"window.optforgeCharts[{chart_id!r}].getDatasetMeta({dataset}).data.length"
    return int(pg.evaluate(js))


def test_leaderboard_rows_plot_and_row_click(site: tuple[str, Seeded], page: Any) -> None:
    url, seeded = site
    pg, console = page
    open_charts(pg, f"{url}/", "pareto-plot")
    rows = pg.locator("#leaderboard tbody tr")
    assert rows.count() == len(seeded.recipe_hashes) == 5
    assert "adamw" in rows.nth(0).inner_text()
    assert chart_points(pg, "pareto-plot", 0) == 5  # one point per recipe
    assert chart_points(pg, "pareto-plot", 1) == 3  # the front line through 3 recipes
    box = pg.locator("canvas#pareto-plot").bounding_box()
    assert box and box["width"] > 300 and box["height"] > 200
    shot(pg, "leaderboard")
    rows.nth(0).locator("td").first.click()  # the rank cell: the row itself navigates
    pg.wait_for_url(f"{url}/recipes/{seeded.recipe_hashes[0]}")
    assert "Recipe adamw" in pg.locator("h1").inner_text()
    assert "optim_core.build" in pg.locator("#snippet").inner_text()
    shot(pg, "recipe")
    assert console.errors == []


def test_plot_point_click_opens_its_recipe(site: tuple[str, Seeded], page: Any) -> None:
    url, seeded = site
    pg, console = page
    open_charts(pg, f"{url}/", "pareto-plot")
    target = pg.evaluate(
        """() => { const c = window.optforgeCharts['pareto-plot'];
                   const i = c.data.datasets[0].data.findIndex(p => p.label === 'sinkgd');
                   const el = c.getDatasetMeta(0).data[i];
                   return {x: el.x, y: el.y, hash: c.data.datasets[0].data[i].hash}; }"""
    )
    box = pg.locator("canvas#pareto-plot").bounding_box()
    pg.mouse.click(box["x"] + target["x"], box["y"] + target["y"])
    pg.wait_for_url(f"{url}/recipes/{target['hash']}")
    assert target["hash"] == seeded.recipe_hashes[1]
    assert console.errors == []


def test_study_page_shows_pareto_front(site: tuple[str, Seeded], page: Any) -> None:
    url, seeded = site
    pg, console = page
    open_charts(pg, f"{url}/studies/{seeded.study_id}", "study-pareto", "study-history")
    assert chart_points(pg, "study-pareto", 0) == 3  # complete trials
    assert chart_points(pg, "study-pareto", 1) == len(seeded.front_trial_numbers)
    assert pg.locator("#pareto-front li").count() == 2
    assert pg.locator("#trials tbody tr").count() == 5
    assert pg.locator('meta[http-equiv="refresh"]').count() == 1  # running: auto-refresh
    shot(pg, "study")
    assert console.errors == []


def test_run_and_compare_curves(site: tuple[str, Seeded], page: Any) -> None:
    url, seeded = site
    pg, console = page
    open_charts(pg, f"{url}/runs/{seeded.run_ids[0]}", "curve-step", "curve-time")
    assert chart_points(pg, "curve-step", 0) == 8 and chart_points(pg, "curve-step", 1) == 4
    shot(pg, "run")
    pg.goto(f"{url}/runs/{seeded.failed_run_id}")
    assert "CUDA out of memory" in pg.locator("#failure-reason").inner_text()
    a, b = seeded.run_ids[0], seeded.run_ids[2]
    open_charts(pg, f"{url}/compare?runs={a},{b}", "compare-step")
    n = pg.evaluate("window.optforgeCharts['compare-step'].data.datasets.length")
    assert n == 4  # train + val of two runs
    shot(pg, "compare")
    assert console.errors == []


def test_not_found_and_empty_pages(site: tuple[str, Seeded], page: Any) -> None:
    url, _ = site
    pg, console = page
    resp = pg.goto(f"{url}/runs/424242")
    assert resp is not None and resp.status == 404
    assert "404" in pg.locator("h1").inner_text()
    shot(pg, "not-found")
    # The only console line allowed is the browser's own note on the 404 document itself.
    assert all("404" in e for e in console.errors)
    console.errors.clear()
    pg.goto(f"{url}/compare")
    assert "Enter run ids" in pg.locator(".empty").inner_text()
    assert console.errors == []
