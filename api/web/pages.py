"""Page routes: leaderboard, studies, runs, experiments, running now, compare, recipes
(server-rendered, read-only) and their CSV downloads."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.deps import SessionDep
from api.web import auth, bench_pages, csv_export, study_views, views
from api.web.render import for_id, not_found, page_for_id, parse_id, render
from core.models import SearchStudy

# Every page goes through the login check of ``auth.PageRoute`` (only in auth mode "all").
router = APIRouter(include_in_schema=False, route_class=auth.PageRoute)
router.include_router(auth.router)
router.include_router(bench_pages.router)


def _page(text: str | None) -> int:
    return parse_id(text) or 1


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
    ctx = views.leaderboard_view(session, workload or None, parse_id(steps), _page(page), sort)
    return render(request, "leaderboard.html", ctx, status_code=404 if ctx["unknown"] else 200)


@router.get("/studies")
def studies_page(request: Request, session: SessionDep, page: str | None = None) -> Response:
    """All studies, newest first."""
    return render(request, "studies.html", study_views.studies_view(session, _page(page)))


@router.get("/studies/{study_id}")
def study_page(
    request: Request, session: SessionDep, study_id: str, page: str | None = None
) -> Response:
    """One study: progress, optimization history, Pareto front, trials."""
    return page_for_id(
        request,
        "study.html",
        "study",
        study_id,
        lambda sid: study_views.study_view(session, sid, _page(page)),
    )


@router.get("/studies/{study_id}/importance.json")
def study_importance(session: SessionDep, study_id: str) -> Response:
    """fANOVA parameter importances of a study's complete trials (a chart spec)."""
    from fastapi.responses import JSONResponse

    from search.study_view import progress, study_dict

    sid = parse_id(study_id)
    study = session.get(SearchStudy, sid) if sid is not None else None
    if study is None:
        return JSONResponse({"detail": f"There is no study {study_id!r}."}, status_code=404)
    info = study_dict(study)
    objectives = tuple(info["objectives"] or ["val_loss", "state_bytes_per_param"])
    n_complete = progress(session, study.id)["complete"]
    spec = study_views.study_importance(study.optuna_study_name, objectives, n_complete)
    return JSONResponse(spec)


@router.get("/runs/{run_id}")
def run_page(request: Request, session: SessionDep, run_id: str) -> Response:
    """One run: curves, recipe, metrics, environment, status."""
    return page_for_id(
        request, "run.html", "run", run_id, lambda rid: views.run_view(session, rid)
    )


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


@router.get("/experiments/{experiment_id}")
def experiment_page(request: Request, session: SessionDep, experiment_id: str) -> Response:
    """One experiment: its spec, its runs with live status, curves with seed bands."""
    from api.web.live import experiment_view

    return page_for_id(
        request,
        "experiment.html",
        "experiment",
        experiment_id,
        lambda eid: experiment_view(session, eid),
    )


@router.get("/running")
def running_page(request: Request, session: SessionDep) -> Response:
    """Runs queued or running now (refreshes itself) and the last finished ones."""
    from api.web.live import running_view

    return render(request, "running.html", running_view(session))


# --- CSV downloads (every row of a table, not one page) -----------------------------------


@router.get("/leaderboard.csv")
def leaderboard_csv(
    session: SessionDep, workload: str | None = None, steps: str | None = None,
    sort: str = "val_loss",
) -> Response:  # fmt: skip
    ctx = views.leaderboard_view(
        session, workload or None, parse_id(steps), 1, sort, everything=True
    )
    name = f"leaderboard-{ctx['workload'] or 'none'}-{ctx['steps'] or 0}.csv"
    return csv_export.csv_response(ctx["rows"], csv_export.BOARD_COLUMNS, name)


@router.get("/studies.csv")
def studies_csv(session: SessionDep) -> Response:
    from search.study_view import list_studies

    rows = [{**s, **s["progress"]} for s in list_studies(session, limit=10_000)]
    return csv_export.csv_response(rows, csv_export.STUDY_COLUMNS, "studies.csv")


@router.get("/studies/{study_id}/trials.csv")
def trials_csv(request: Request, session: SessionDep, study_id: str) -> Response:
    from search.study_view import study_detail, trial_dicts

    def download(sid: int, objectives: list[str]) -> Response:
        rows, cols = csv_export.trial_csv(trial_dicts(session, sid), objectives)
        return csv_export.csv_response(rows, cols, f"study-{sid}-trials.csv")

    return for_id(
        request,
        "study",
        study_id,
        lambda sid: study_detail(session, sid).get("objectives") or ["val_loss"],
        download,
    )


@router.get("/experiments/{experiment_id}/runs.csv")
def experiment_csv(request: Request, session: SessionDep, experiment_id: str) -> Response:
    from api.web.live import experiment_view

    def download(eid: int, runs: list[dict[str, Any]]) -> Response:
        rows = csv_export.run_csv_rows(runs)
        return csv_export.csv_response(rows, csv_export.RUN_COLUMNS, f"experiment-{eid}-runs.csv")

    return for_id(
        request,
        "experiment",
        experiment_id,
        lambda eid: experiment_view(session, eid)["runs"],
        download,
    )


@router.get("/recipes/{recipe_hash}/runs.csv")
def recipe_csv(request: Request, session: SessionDep, recipe_hash: str) -> Response:
    try:
        ctx = views.recipe_view(session, recipe_hash, 1, per_page=10_000)
    except LookupError:
        return not_found(request, f"There is no recipe {recipe_hash!r}.")
    rows = csv_export.run_csv_rows({**r, "recipe": ctx["recipe"]} for r in ctx["runs"])
    name = f"recipe-{recipe_hash[:10]}-runs.csv"
    return csv_export.csv_response(rows, csv_export.RUN_COLUMNS, name)


@router.get("/compare.csv")
def compare_csv(session: SessionDep, runs: str = "") -> Response:
    rows = csv_export.run_csv_rows(views.compare_view(session, views.parse_ids(runs))["runs"])
    return csv_export.csv_response(rows, csv_export.RUN_COLUMNS, "compare-runs.csv")


@router.get("/running.csv")
def running_csv(session: SessionDep) -> Response:
    from api.web.live import running_view

    ctx = running_view(session)
    rows = csv_export.run_csv_rows([*ctx["live"], *ctx["recent"]])
    return csv_export.csv_response(rows, csv_export.RUN_COLUMNS, "running.csv")
