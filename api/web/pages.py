"""Page routes: leaderboard, studies, runs, compare, recipes (server-rendered, read-only)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.deps import SessionDep
from api.web import auth, views
from api.web.render import not_found, render

# Every page goes through the login check of ``auth.PageRoute`` (only in auth mode "all").
router = APIRouter(include_in_schema=False, route_class=auth.PageRoute)
router.include_router(auth.router)


def _int(text: str | None) -> int | None:
    """A non-negative int from a path/query string, or None (a bad id is a 404, not a 422)."""
    text = (text or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None


def _page(text: str | None) -> int:
    return _int(text) or 1


@router.get("/")
def leaderboard_page(
    request: Request,
    session: SessionDep,
    workload: str | None = None,
    steps: str | None = None,
    page: str | None = None,
    sort: str = "val_loss",
) -> Response:
    """Leaderboard of recipes for one workload/steps with the loss-vs-memory Pareto plot."""
    ctx = views.leaderboard_view(session, workload or None, _int(steps), _page(page), sort)
    return render(request, "leaderboard.html", ctx)


@router.get("/studies")
def studies_page(request: Request, session: SessionDep, page: str | None = None) -> Response:
    """All studies, newest first."""
    return render(request, "studies.html", views.studies_view(session, _page(page)))


@router.get("/studies/{study_id}")
def study_page(
    request: Request, session: SessionDep, study_id: str, page: str | None = None
) -> Response:
    """One study: progress, optimization history, Pareto front, trials."""
    sid = _int(study_id)
    try:
        if sid is None:
            raise LookupError
        ctx = views.study_view(session, sid, _page(page))
    except LookupError:
        return not_found(request, f"There is no study {study_id!r}.")
    return render(request, "study.html", ctx)


@router.get("/runs/{run_id}")
def run_page(request: Request, session: SessionDep, run_id: str) -> Response:
    """One run: curves, recipe, metrics, environment, status."""
    rid = _int(run_id)
    try:
        if rid is None:
            raise LookupError
        ctx = views.run_view(session, rid)
    except LookupError:
        return not_found(request, f"There is no run {run_id!r}.")
    return render(request, "run.html", ctx)


@router.get("/compare")
def compare_page(request: Request, session: SessionDep, runs: str = "") -> Response:
    """Curves of several runs overlaid (``?runs=1,2,3``)."""
    ids = views.parse_ids(runs)
    ctx = views.compare_view(session, ids)
    if ids and not ctx["runs"]:
        return not_found(request, f"None of the runs {runs!r} exist.")
    return render(request, "compare.html", {**ctx, "ids": ids, "max": views.MAX_COMPARE})


@router.get("/recipes/{recipe_hash}")
def recipe_page(
    request: Request, session: SessionDep, recipe_hash: str, page: str | None = None
) -> Response:
    """One recipe: canonical form, axes in words, Python snippet, all its runs."""
    try:
        ctx = views.recipe_view(session, recipe_hash, _page(page))
    except LookupError:
        return not_found(request, f"There is no recipe {recipe_hash!r}.")
    return render(request, "recipe.html", ctx)
