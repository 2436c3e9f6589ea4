"""Seed a database of record with recipes, runs (with curves) and a study for the web tests."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.models import Base, Recipe, Run, RunMetric, SearchStudy, SearchTrial

WORKLOAD = "synthetic-lm"
STEPS = 40
STUDY_STEPS = 80  # study runs sit on their own leaderboard (workload, steps) pair
N_PARAMS = 10_000

# (preset name or None, norms, state bits, rank, val loss, state bytes/param)
PRESETS: list[tuple[str | None, list[str], int, int | None, float, float]] = [
    ("adamw", ["adam"], 32, None, 3.10, 8.0),
    ("sinkgd", ["row", "col"], 32, None, 3.20, 0.5),
    ("adam8bit", ["adam"], 8, None, 3.15, 2.1),
    ("galore", ["adam"], 32, 8, 3.30, 1.0),
    (None, ["sign"], 16, 4, 3.60, 0.9),  # an unnamed (searched) recipe, dominated
]


@dataclass
class Seeded:
    recipe_hashes: list[str] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)
    failed_run_id: int = 0
    running_run_id: int = 0
    study_id: int = 0
    front_trial_numbers: list[int] = field(default_factory=list)


def canonical(
    norms: list[str], bits: int, rank: int | None, lr: float, name: str | None
) -> dict[str, Any]:
    """A design-form recipe as ``Recipe.canonical()`` stores it (valid for optim_core)."""
    design = {
        "norms": norms,
        "momentum": {"beta": 0.9, "placement": "matrices", "position": "before_norm",
                     "nesterov": False},
        "rank": rank,
        "projection": None if rank is None else {"basis": "svd", "refresh": 200, "scale": 1.0,
                                                 "complement": "drop"},
        "state_bits": bits,
        "other": "adamw",
    }  # fmt: skip
    out: dict[str, Any] = {"schema": 1, "lr": lr, "weight_decay": 0.0, "design": design}
    if name:
        out["name"] = name
    return out


def add_recipe(session: Session, canon: dict[str, Any], name: str | None) -> Recipe:
    body = {k: v for k, v in canon.items() if k != "name"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
    recipe = Recipe(hash=digest, name=name, canonical=canon)
    session.add(recipe)
    session.flush()
    return recipe


def add_run(
    session: Session,
    recipe: Recipe,
    seed: int,
    loss: float,
    bpp: float,
    status: str = "succeeded",
    n_points: int = 8,
    steps: int = STEPS,
    **extra: Any,
) -> Run:
    run = Run(
        recipe_id=recipe.id, workload=WORKLOAD, steps=steps, seed=seed, lr=0.01,
        status=status, final_val_loss=loss if status == "succeeded" else None,
        steps_to_target=steps * 3 // 4 if status == "succeeded" and loss < 3.25 else None,
        target_loss=3.25,
        state_bytes_per_param=bpp, state_bytes=int(bpp * N_PARAMS), n_params=N_PARAMS,
        tokens_per_s=1000.0 + 10 * seed, wall_s=4.0, attempts=1,
        env={"torch": "2.13.0", "device": "cpu", "threads": 1}, **extra,
    )  # fmt: skip
    session.add(run)
    session.flush()
    for i in range(n_points):
        step = (i + 1) * steps // n_points
        tr = loss + 2.0 * math.exp(-3.0 * i / n_points)
        session.add(
            RunMetric(
                run_id=run.id, step=step, tokens=step * 512, elapsed_s=0.5 * (i + 1),
                train_loss=tr, val_loss=tr + 0.05 if i % 2 == 1 else None, lr=0.01,
            )
        )  # fmt: skip
    return run


def seed_board(session: Session, extra_recipes: int = 0) -> Seeded:
    """Preset recipes with 2 seeds each (+ extra unnamed ones for pagination), a failed run
    and a running run."""
    out = Seeded()
    recipes: list[Recipe] = []
    rows = list(PRESETS) + [
        (None, ["row"], 32, 2 + i, 4.0 + 0.01 * i, 3.0) for i in range(extra_recipes)
    ]
    for name, norms, bits, rank, loss, bpp in rows:
        recipe = add_recipe(session, canonical(norms, bits, rank, 0.01, name), name)
        out.recipe_hashes.append(recipe.hash)
        recipes.append(recipe)
        for seed in (0, 1):
            out.run_ids.append(add_run(session, recipe, seed, loss + 0.02 * seed, bpp).id)
    first = recipes[0]
    failed = add_run(session, first, 7, 0.0, 8.0, status="failed", n_points=2,
                     failure_reason="CUDA out of memory at step 3")  # fmt: skip
    running = add_run(session, first, 8, 0.0, 8.0, status="running", n_points=0)
    out.failed_run_id, out.running_run_id = failed.id, running.id
    return out


def seed_study(session: Session, seeded: Seeded, status: str = "completed") -> int:
    """A 2-objective study: trials 0 and 1 on the front, 2 dominated, 3 pruned, 4 failed."""
    study = SearchStudy(
        name="web-test-study", spec={"objectives": ["val_loss", "state_bytes_per_param"],
                                     "seeds": [0]},
        optuna_study_name=f"web-test-{len(seeded.run_ids)}", workload=WORKLOAD, steps=STUDY_STEPS,
        status=status, n_trials=6, parallelism=2, sampler="tpe", seed=0,
    )  # fmt: skip
    session.add(study)
    session.flush()
    specs = [
        ("complete", [3.2, 0.5], None),
        ("complete", [3.1, 8.0], None),
        ("complete", [3.6, 9.0], None),
        ("pruned", None, None),
        ("failed", None, "diverged: loss is nan"),
    ]
    recipes = session.query(Recipe).order_by(Recipe.id).all()
    for number, (st, values, reason) in enumerate(specs):
        trial = SearchTrial(
            study_id=study.id, number=number, recipe_id=recipes[number % len(recipes)].id,
            params={"rank": number, "state_bits": 32}, status=st, values=values,
            failure_reason=reason, pruned_step=20 if st == "pruned" else None,
        )  # fmt: skip
        session.add(trial)
        session.flush()
        loss = values[0] if values else 5.0
        bpp = values[1] if values else 1.0
        add_run(session, recipes[number % len(recipes)], 0, loss, bpp, n_points=4,
                trial_id=trial.id, status="succeeded" if values else st, steps=STUDY_STEPS)  # fmt: skip
    seeded.front_trial_numbers = [0, 1]
    seeded.study_id = study.id
    return study.id


def create_schema(engine: Engine) -> None:
    Base.metadata.create_all(engine)
