"""Leaderboard aggregation on seeded rows: best lr, mean ± std, Pareto flags, sort, paging."""

from __future__ import annotations

import functools
import statistics
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.models import Recipe, Run

W, STEPS = "synthetic-lm", 40


def _add_recipes(session: Any, names: str) -> dict[str, int]:
    """One recipe per letter of ``names``; returns name -> recipe id."""
    ids = {}
    for name in names:
        recipe = Recipe(hash=f"h{name}" * 8, name=name, canonical={"name": name})
        session.add(recipe)
        session.flush()
        ids[name] = recipe.id
    return ids


def _add_run(
    session: Any,
    ids: dict[str, int],
    name: str,
    lr: float,
    seed: int,
    loss: float | None,
    **kw: Any,
) -> Run:
    """A run of recipe ``name`` (its state bytes/param fixed per recipe); ``kw`` overrides."""
    bpp = {"a": 8.0, "b": 2.0, "c": 9.0, "d": 1.0}[name]
    row = Run(
        recipe_id=ids[name], workload=kw.pop("workload", W), steps=kw.pop("steps", STEPS),
        seed=seed, lr=lr, status=kw.pop("status", "succeeded"), final_val_loss=loss,
        state_bytes_per_param=bpp, state_bytes=int(bpp * 1000), n_params=1000,
        tokens_per_s=kw.pop("tps", 100.0), steps_to_target=kw.pop("stt", None), **kw,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def _seed_rows(session: Any) -> dict[str, int]:
    """Four recipes; returns name -> recipe id.

    a: low loss, many bytes; b: higher loss, few bytes; c: dominated by a and b;
    d: only failed runs (absent). Extra noise: a reused copy, another steps value.
    """
    ids = _add_recipes(session, "abcd")
    run = functools.partial(_add_run, session, ids)
    # a: lr 0.01 is best (mean 2.0 over seeds 2.1, 1.9, 2.0); lr 0.1 worse
    first = run("a", 0.01, 0, 2.1, stt=30)
    run("a", 0.01, 1, 1.9, stt=20)
    run("a", 0.01, 2, 2.0)
    run("a", 0.1, 0, 2.5)
    run("a", 0.1, 1, 2.7)
    run("a", 0.01, 0, 2.1, reused_from_id=first.id)  # a copy: never counted twice
    run("a", 0.01, 3, None, status="failed")
    # b: one lr, two seeds
    run("b", 0.02, 0, 2.4, tps=300.0)
    run("b", 0.02, 1, 2.6, tps=300.0)
    # c: dominated (loss 2.5 > a's 2.0 and bytes 9 > 8)
    run("c", 0.05, 0, 2.5)
    run("c", 0.05, 0, 2.5, steps=99)  # another board
    # d: only failed / diverged
    run("d", 0.05, 0, None, status="failed")
    run("d", 0.05, 1, 9.9, status="diverged")
    return ids


@pytest.fixture
def board(open_client: TestClient) -> dict[str, int]:
    from core.db import session_scope

    with session_scope() as session:
        return _seed_rows(session)


def test_mean_std_best_lr_and_pareto(open_client: TestClient, board: dict[str, int]) -> None:
    r = open_client.get("/v1/leaderboard", params={"workload": W, "steps": STEPS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 3 and [row["name"] for row in body["rows"]] == ["a", "b", "c"]
    a, b, c = body["rows"]
    assert a["best_lr"] == pytest.approx(0.01) and a["n_runs"] == 3 and a["n_runs_total"] == 5
    assert a["val_loss_mean"] == pytest.approx(statistics.mean([2.1, 1.9, 2.0]))
    assert a["val_loss_std"] == pytest.approx(statistics.stdev([2.1, 1.9, 2.0]))
    assert a["steps_to_target"] == pytest.approx(25.0) and a["n_lrs"] == 2
    assert b["val_loss_mean"] == pytest.approx(2.5)
    assert b["val_loss_std"] == pytest.approx(statistics.stdev([2.4, 2.6]))
    assert c["n_runs"] == 1 and c["val_loss_std"] == 0.0 and c["steps_to_target"] is None
    assert (a["pareto"], b["pareto"], c["pareto"]) == (True, True, False)
    assert a["state_bytes_per_param"] == 8.0 and a["state_bytes"] == 8000


def test_sort_and_pagination(open_client: TestClient, board: dict[str, int]) -> None:
    def names(**params: Any) -> list[str]:
        r = open_client.get("/v1/leaderboard", params={"workload": W, "steps": STEPS, **params})
        assert r.status_code == 200, r.text
        return [row["name"] for row in r.json()["rows"]]

    assert names(sort="state_bytes") == ["b", "a", "c"]
    assert names(sort="-val_loss") == ["b", "c", "a"]  # ties (b, c at 2.5) stay by name
    assert names(sort="tokens_per_s") == ["b", "a", "c"]  # descending by default
    assert names(sort="steps_to_target") == ["a", "b", "c"]  # missing values last
    assert names(limit=2) == ["a", "b"] and names(limit=2, offset=2) == ["c"]
    assert names(offset=10) == []
    bad = open_client.get("/v1/leaderboard", params={"workload": W, "sort": "bogus"})
    assert bad.status_code == 422 and "val_loss" in bad.json()["errors"][0]["msg"]
    assert bad.json()["errors"][0]["field"] == "query.sort"
    assert open_client.get("/v1/leaderboard", params={"limit": 0}).status_code == 422


def test_defaults_unknown_workload_and_empty(
    open_client: TestClient, board: dict[str, int]
) -> None:
    r = open_client.get("/v1/leaderboard")  # the pair with most runs
    assert r.status_code == 200 and (r.json()["workload"], r.json()["steps"]) == (W, STEPS)
    assert r.json()["boards"] == [
        {"workload": W, "steps": STEPS, "n_runs": 9},  # reused copies count here
        {"workload": W, "steps": 99, "n_runs": 1},
    ]
    assert r.json()["total"] == 3
    unknown = open_client.get("/v1/leaderboard", params={"workload": "nope"})
    assert unknown.status_code == 404 and "synthetic-lm" in unknown.json()["detail"]
    nothing = open_client.get("/v1/leaderboard", params={"workload": "shakespeare-lm"})
    assert nothing.status_code == 200 and nothing.json()["rows"] == []
    empty = open_client.get("/v1/leaderboard", params={"workload": W, "steps": 7})
    assert empty.status_code == 200 and empty.json()["rows"] == [] and empty.json()["total"] == 0


def test_pareto_flags_pure() -> None:
    from records.leaderboard import pareto_flags

    pts = [(2.0, 8.0), (2.5, 2.0), (2.5, 9.0), (2.0, 8.0), (1.0, None), (2.5, 2.0), (3.0, 1.0)]
    assert pareto_flags(pts) == [True, True, False, True, False, True, True]
    assert pareto_flags([]) == [] and pareto_flags([(None, 1.0), (2.0, 1.0)]) == [False, True]
