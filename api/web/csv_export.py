"""CSV downloads of the web tables (every row, not one page): ``text/csv`` attachments."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.responses import Response

RUN_COLUMNS = (
    "id", "origin", "recipe_name", "recipe_hash", "workload", "steps", "seed", "lr", "queue",
    "status", "reused_from_id", "experiment_id", "study_id", "trial_number", "final_val_loss",
    "steps_to_target", "target_loss", "stopped_step", "tokens_per_s", "wall_s", "state_bytes",
    "n_params", "state_bytes_per_param", "peak_mem_bytes", "created_at", "started_at",
    "finished_at", "failure_reason",
)  # fmt: skip
BOARD_COLUMNS = (
    "rank", "label", "name", "recipe_hash", "val_loss_mean", "val_loss_std", "n_runs",
    "n_runs_total", "n_lrs", "best_lr", "steps_to_target", "state_bytes",
    "state_bytes_per_param", "tokens_per_s", "pareto",
)  # fmt: skip
STUDY_COLUMNS = (
    "id", "name", "status", "workload", "steps", "sampler", "seed", "n_trials", "complete",
    "running", "pruned", "failed", "created_at", "finished_at",
)  # fmt: skip


def _cell(v: Any) -> Any:
    from api.web.render import fmt_time

    if v is None:
        return ""
    if hasattr(v, "isoformat"):
        return fmt_time(v)
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True)
    return v


def csv_response(
    rows: Iterable[dict[str, Any]], columns: Iterable[str], filename: str
) -> Response:
    """``rows`` (dicts) as a CSV attachment with the given columns, in order."""
    cols = list(columns)
    return csv_table(cols, ([_cell(row.get(c)) for c in cols] for row in rows), filename)


def csv_table(header: Sequence[str], rows: Iterable[Sequence[Any]], filename: str) -> Response:
    """Rows already in the order of ``header`` as a CSV attachment named ``filename``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


def run_csv_rows(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Page run rows (with ``recipe``) flattened for :data:`RUN_COLUMNS`."""
    out = []
    for r in runs:
        recipe = r.get("recipe") or {}
        out.append({**r, "recipe_name": recipe.get("name"), "recipe_hash": recipe.get("hash")})
    return out


def trial_csv(trials: list[dict[str, Any]], objectives: list[str]) -> tuple[list[Any], list[str]]:
    """Trial rows with one column per objective and per parameter."""
    params = sorted({k for t in trials for k in (t.get("params") or {})})
    cols = ["number", "status", *objectives, "recipe_hash", "run_ids", "failure_reason",
            "pruned_step", *[f"param_{p}" for p in params]]  # fmt: skip
    rows = []
    for t in trials:
        row = {"number": t["number"], "status": t["status"], "recipe_hash": t["recipe_hash"],
               "run_ids": " ".join(str(r["id"]) for r in t["runs"]),
               "failure_reason": t["failure_reason"], "pruned_step": t["pruned_step"]}  # fmt: skip
        row.update(zip(objectives, t.get("values") or [], strict=False))
        row.update({f"param_{k}": v for k, v in (t.get("params") or {}).items()})
        rows.append(row)
    return rows, cols
