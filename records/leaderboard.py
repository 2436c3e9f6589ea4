"""The leaderboard: one row per recipe on a (workload, steps) pair, aggregated in SQL.

For each recipe the best lr is the one with the lowest mean final val loss over seeds; the row
reports mean ± std (sample std, ddof=1; 0.0 for one seed) over the seeds at that lr, and a
Pareto flag on (val_loss_mean, state_bytes_per_param): no other row is at least as good on
both and strictly better on one. Only succeeded runs count; a reused run (a copy of an earlier
identical run) is skipped so a seed is not counted twice.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Float, Select, cast, func, select
from sqlalchemy.orm import Session

from core.errors import Invalid
from core.models import Recipe, Run, RunStatus, SearchTrial

# sort key -> (row field, descending by default)
SORT_FIELDS: dict[str, tuple[str, bool]] = {
    "val_loss": ("val_loss_mean", False),
    "val_loss_std": ("val_loss_std", False),
    "state_bytes": ("state_bytes_per_param", False),
    "state_bytes_per_param": ("state_bytes_per_param", False),
    "steps_to_target": ("steps_to_target", False),
    "tokens_per_s": ("tokens_per_s", True),
    "n_runs": ("n_runs", True),
    "name": ("name", False),
    "best_lr": ("best_lr", False),
}
MAX_LIMIT = 1000


class LeaderboardError(Invalid):
    """A bad leaderboard query (unknown sort key, bad paging); ``field`` names the parameter."""


def _per_lr_query(workload: str, steps: int) -> Select[Any]:
    """(recipe, lr) groups: count, sum and sum of squares of val loss, plus cost columns.

    One GROUP BY over the board's runs (index ``ix_runs_board``); a nested per-seed level
    measured 3x slower on 10k runs, so a seed trained twice (two identical runs queued before
    either finished) counts as two runs.
    """
    v = Run.final_val_loss
    return (
        select(
            Run.recipe_id,
            Run.lr,
            func.count().label("n"),
            func.sum(v).label("s1"),
            func.sum(v * v).label("s2"),
            func.avg(cast(Run.steps_to_target, Float)).label("stt"),  # float avg: no numeric
            func.avg(Run.tokens_per_s).label("tps"),
            func.avg(Run.state_bytes_per_param).label("bpp"),
            func.max(Run.state_bytes).label("sb"),
        )
        .where(
            Run.workload == workload,
            Run.steps == steps,
            Run.status == RunStatus.succeeded.value,
            Run.final_val_loss.is_not(None),
            Run.reused_from_id.is_(None),
        )
        .group_by(Run.recipe_id, Run.lr)
    )


def _best_lr_query(workload: str, steps: int) -> Select[Any]:
    """One (recipe, best lr) group per recipe, picked in SQL with a window function."""
    per_lr = _per_lr_query(workload, steps).subquery("per_lr")
    mean = per_lr.c.s1 / per_lr.c.n
    ranked = select(
        per_lr,
        func.row_number()
        .over(partition_by=per_lr.c.recipe_id, order_by=(mean, per_lr.c.lr))
        .label("rk"),
        func.sum(per_lr.c.n).over(partition_by=per_lr.c.recipe_id).label("n_total"),
        func.count().over(partition_by=per_lr.c.recipe_id).label("n_lrs"),
    ).subquery("ranked")
    return (
        select(ranked, Recipe.hash, Recipe.name)
        .join(Recipe, Recipe.id == ranked.c.recipe_id)
        .where(ranked.c.rk == 1)
    )


def _std(n: int, s1: float, s2: float) -> float:
    """Sample std from count, sum and sum of squares (0.0 for a single value)."""
    if n < 2:
        return 0.0
    var = (s2 - s1 * s1 / n) / (n - 1)
    return math.sqrt(max(var, 0.0))


def _row(r: Any) -> dict[str, Any]:
    n, s1, s2 = int(r.n), float(r.s1), float(r.s2)
    return {
        "recipe_id": r.recipe_id,
        "recipe_hash": r.hash,
        "name": r.name or r.hash[:10],
        "best_lr": float(r.lr),
        # a NaN/inf loss recorded as "succeeded" (Postgres keeps NaN) sorts last, never ranks
        "val_loss_mean": s1 / n if math.isfinite(s1) and math.isfinite(s2) else None,
        "val_loss_std": _std(n, s1, s2) if math.isfinite(s1) and math.isfinite(s2) else None,
        "n_runs": n,
        "n_runs_total": int(r.n_total),
        "n_lrs": int(r.n_lrs),
        "steps_to_target": None if r.stt is None else float(r.stt),
        "state_bytes": None if r.sb is None else int(r.sb),
        "state_bytes_per_param": None if r.bpp is None else float(r.bpp),
        "tokens_per_s": None if r.tps is None else float(r.tps),
        "pareto": False,
    }


def pareto_flags(points: list[tuple[float | None, float | None]]) -> list[bool]:
    """Non-dominated flags for (loss, bytes) points, both minimised; a None -> False."""
    known = [(b, v, i) for i, (v, b) in enumerate(points) if v is not None and b is not None]
    flags = [False] * len(points)
    best_loss = math.inf
    prev: tuple[float, float] | None = None
    for b, v, i in sorted(known):  # by bytes, then loss: a point beats all later ones it ties
        if v < best_loss or (v, b) == prev:
            flags[i] = True
            best_loss = min(best_loss, v)
            prev = (v, b)
    return flags


def parse_sort(sort: str) -> tuple[str, bool]:
    """(row field, descending) for a sort key; LeaderboardError lists the valid keys."""
    desc = sort.startswith("-")
    key = sort.lstrip("-+ ")
    if key not in SORT_FIELDS:
        valid = ", ".join(sorted(SORT_FIELDS))
        raise LeaderboardError(
            f"unknown sort key {key!r}; valid: {valid} (prefix '-' to reverse)", "sort"
        )
    field, default_desc = SORT_FIELDS[key]
    return field, desc != default_desc


def _sorted(rows: list[dict[str, Any]], field: str, desc: bool) -> list[dict[str, Any]]:
    present = [r for r in rows if r[field] is not None]
    missing = [r for r in rows if r[field] is None]  # always last
    present.sort(key=lambda r: (r["name"], r["recipe_id"]))
    present.sort(key=lambda r: r[field], reverse=desc)
    return present + missing


def leaderboard(
    session: Session,
    workload: str,
    steps: int,
    sort: str = "val_loss",
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """Rows of one page of the leaderboard, with ``total`` recipes and the query echoed.

    Args:
        session: an open session on the database of record.
        workload: workload name (not checked against the catalog here).
        steps: run length; only runs of exactly this many steps are compared.
        sort: a key of ``SORT_FIELDS``, optionally prefixed with ``-`` to reverse its order.
        limit: page size (1..MAX_LIMIT); offset: rows skipped.

    Returns:
        ``{"workload", "steps", "sort", "limit", "offset", "total", "rows": [...]}``.

    Raises:
        LeaderboardError: unknown sort key or out-of-range paging.
    """
    field, desc = parse_sort(sort)
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise LeaderboardError(f"limit must be in 1..{MAX_LIMIT} and offset >= 0", "limit")
    ordered = _sorted(board_rows(session, workload, steps), field, desc)
    return {
        "workload": workload,
        "steps": steps,
        "sort": sort,
        "limit": limit,
        "offset": offset,
        "total": len(ordered),
        "rows": ordered[offset : offset + limit],
    }


def board_rows(session: Session, workload: str, steps: int) -> list[dict[str, Any]]:
    """Every recipe's row on the board (best lr), with its Pareto flag and label; unsorted."""
    rows = [_row(r) for r in session.execute(_best_lr_query(workload, steps))]
    flags = pareto_flags([(r["val_loss_mean"], r["state_bytes_per_param"]) for r in rows])
    for row, flag in zip(rows, flags, strict=True):
        row["pareto"] = flag
    add_labels(session, rows)
    return rows


def add_labels(session: Session, rows: list[dict[str, Any]]) -> None:
    """``label`` of each row: the recipe's name, or "study N / trial k" (Optuna's number) for
    an unnamed recipe a study proposed (its first trial), else the short hash."""
    unnamed = [r["recipe_id"] for r in rows if r["name"] == r["recipe_hash"][:10]]
    first: dict[int, str] = {}
    if unnamed:
        stmt = (
            select(SearchTrial.recipe_id, SearchTrial.study_id, SearchTrial.number)
            .where(SearchTrial.recipe_id.in_(unnamed))
            .order_by(SearchTrial.id)
        )
        for recipe_id, study_id, number in session.execute(stmt):
            if recipe_id is not None:
                first.setdefault(recipe_id, f"study {study_id} / trial {number}")
    for r in rows:
        r["label"] = first.get(r["recipe_id"], r["name"])


def board_choices(session: Session, split_reused: bool = False) -> list[dict[str, Any]]:
    """(workload, steps) pairs that have succeeded runs, most runs first.

    ``n_runs`` counts every succeeded run (reused copies too, the API's contract); with
    ``split_reused`` each pair also has ``n_trained`` and ``n_reused`` (the web pages)."""
    n = func.count(Run.id)
    trained = func.count(Run.id).filter(Run.reused_from_id.is_(None))
    stmt = (
        select(Run.workload, Run.steps, n.label("n"), trained.label("n_trained"))
        .where(Run.status == RunStatus.succeeded.value)
        .group_by(Run.workload, Run.steps)
        .order_by(n.desc(), Run.workload, Run.steps)
    )
    out = []
    for w, s, k, t in session.execute(stmt):
        row: dict[str, Any] = {"workload": w, "steps": s, "n_runs": k}
        if split_reused:
            row.update(n_trained=t, n_reused=k - t)
        out.append(row)
    return out
