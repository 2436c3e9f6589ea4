"""GET /v1/leaderboard: one row per recipe on a (workload, steps) pair, sorted and paginated."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import ReaderDep, SessionDep
from api.schemas import LeaderboardPublic
from core.workloads import get_workload
from records.leaderboard import board_choices, leaderboard, parse_sort

router = APIRouter(tags=["leaderboard"])


@router.get("/leaderboard", response_model=LeaderboardPublic)
def get_leaderboard(
    session: SessionDep,
    _reader: ReaderDep,
    workload: Annotated[str | None, Query(max_length=64)] = None,
    steps: Annotated[int | None, Query(ge=1, le=10_000_000)] = None,
    sort: Annotated[str, Query(max_length=40)] = "val_loss",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    """Best lr per recipe, mean ± std val loss over seeds, cost columns and Pareto flags.

    Without ``workload``/``steps`` the pair with the most succeeded runs is shown and
    ``boards`` lists every (workload, steps) pair that has results. An unknown workload is a
    404 and an unknown sort key a 422 (domain errors, mapped in api/errors.py).
    """
    if workload is not None:
        get_workload(workload)
    parse_sort(sort)
    boards: list[dict[str, Any]] = []
    if workload is None or steps is None:  # pick the pair with most runs (extra query)
        boards = board_choices(session)
        mine = [b for b in boards if workload in (None, b["workload"])]
        workload = workload or (mine[0]["workload"] if mine else None)
        steps = steps or (mine[0]["steps"] if mine else None)
    if workload is None or steps is None:
        empty = {"sort": sort, "limit": limit, "offset": offset, "total": 0, "rows": []}
        return {"workload": workload, "steps": steps, "boards": boards, **empty}
    board = leaderboard(session, workload, steps, sort=sort, limit=limit, offset=offset)
    return {**board, "boards": boards}  # validated once, by response_model
