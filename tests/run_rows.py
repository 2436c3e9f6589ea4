"""Run rows for the worker-side database tests on SQLite (tests/core/test_core_db_faults.py,
tests/workers/test_wk_runs_db.py): a migrated database, new runs, a run read back, and a
trainer's curve point."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class Point:
    """A curve point as the trainer reports it (the fields of ``workers.train.MetricPoint``)."""

    step: int
    tokens: int = 0
    elapsed_s: float = 0.0
    train_loss: float | None = None
    val_loss: float | None = None
    lr: float = 0.01


def migrate(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Set the ``OPTFORGE_*`` variables ``env``, forget the cached settings and migrate the test
    data dir's SQLite database to head."""
    from core.config import get_settings
    from migrations.runner import upgrade

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    upgrade()


def new_runs(n: int = 1, **values: Any) -> list[int]:
    """``n`` queued runs (seeds 0 .. n-1, 20 steps of synthetic-lm) of one new recipe, each
    with the column ``values``; their ids."""
    from core.db import session_scope
    from core.models import Recipe, Run

    with session_scope() as s:
        recipe = Recipe(hash=f"h{time.monotonic_ns()}", canonical={"lr": 0.01})
        s.add(recipe)
        s.flush()
        runs = [
            Run(recipe_id=recipe.id, workload="synthetic-lm", steps=20, seed=i, lr=0.01, **values)
            for i in range(n)
        ]
        s.add_all(runs)
        s.flush()
        return [r.id for r in runs]


def get_run(run_id: int) -> Any:
    """The run row ``run_id`` as stored now (detached: read its columns, not relations)."""
    from core.db import session_scope
    from core.models import Run

    with session_scope() as s:
        return s.get_one(Run, run_id)
