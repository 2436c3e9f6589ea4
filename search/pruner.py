"""Rung-based pruning that works for multi-objective studies (Optuna's cannot; services.md §0.6).

Rule (asynchronous successive halving, Li et al. 2020 "A System for Massively Parallel
Hyperparameter Tuning", compared within a memory class):

* rungs are the steps ``round(steps / eta**k)`` for ``k = 1..n_rungs`` (e.g. 300 steps, eta 3 ->
  rungs 33 and 100);
* a run's value at a rung is its last validation loss at a step <= the rung;
* when a run of a trial reports an evaluation at or after a rung, it is compared with the runs of
  the study's *other* trials that reached that rung and lie in the same state-memory class
  (``|log2(bytes_a + 1) - log2(bytes_b + 1)| <= 1``: a 1-byte/param recipe is not pruned because
  AdamW's 8 bytes/param do better); runs whose bytes are not known yet count as peers of all;
* it is pruned when it is not within the best ``ceil(n / eta)`` of those ``n`` values and at
  least ``min_peers`` peers exist; a non-finite loss is always pruned.

The best run at a rung is always kept, so the eventual best trial is never pruned if its curve
leads at each rung. :func:`sha_should_prune` is the pure decision; :func:`should_prune_run`
loads the peers from the database (the hook the trainer calls, docs/architecture.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import session_scope
from core.errors import NotFound
from core.models import Run, RunMetric, SearchStudy, SearchTrial
from core.workloads import get_workload

ETA = 3
N_RUNGS = 2
MIN_PEERS = 2


@dataclass(frozen=True)
class PeerRun:
    """Another trial's run: its (step, val_loss) evaluations and state bytes/param if known."""

    curve: tuple[tuple[int, float], ...]
    state_bytes_per_param: float | None = None


def rungs_for(
    steps: int, eta: int = ETA, n_rungs: int = N_RUNGS, eval_every: int | None = None
) -> list[int]:
    """The rung steps for a run of ``steps`` steps (ascending, each >= 1, < steps).

    With ``eval_every`` (the workload's evaluation period) each rung moves up to the next
    evaluation step, so every rung is a step at which all runs have a validation loss.
    """
    rungs = {max(1, round(steps / eta**k)) for k in range(1, n_rungs + 1)}
    if eval_every:
        rungs = {math.ceil(r / eval_every) * eval_every for r in rungs}
    return sorted(r for r in rungs if r < steps)


def current_rung(step: int, rungs: Sequence[int]) -> int | None:
    """The highest rung at or below ``step`` (None before the first rung)."""
    passed = [r for r in rungs if r <= step]
    return max(passed) if passed else None


def value_at(curve: Sequence[tuple[int, float]], rung: int) -> float | None:
    """The last val loss at a step <= ``rung`` (None when the curve has not got there)."""
    best_step = -1
    value: float | None = None
    for step, loss in curve:
        if best_step < step <= rung:
            best_step, value = step, loss
    return value


def reached(curve: Sequence[tuple[int, float]], rung: int) -> bool:
    return any(step >= rung for step, _ in curve)


def same_memory_class(a: float | None, b: float | None) -> bool:
    """True when two state sizes (bytes/param) are within a factor ~2 (unknown = any)."""
    if a is None or b is None:
        return True
    return abs(math.log2(a + 1.0) - math.log2(b + 1.0)) <= 1.0


def sha_should_prune(
    value: float, peer_values: Sequence[float], eta: int = ETA, min_peers: int = MIN_PEERS
) -> bool:
    """Successive halving at one rung: prune unless ``value`` is in the best ceil(n/eta)."""
    if not math.isfinite(value):
        return True
    peers = [v if math.isfinite(v) else math.inf for v in peer_values]
    if len(peers) < min_peers:
        return False
    values = sorted([*peers, value])
    keep = max(1, math.ceil(len(values) / eta))
    return value > values[keep - 1]


def decide(
    step: int,
    val_loss: float,
    own_curve: Sequence[tuple[int, float]],
    own_bytes: float | None,
    peers: Sequence[PeerRun],
    steps: int,
    eta: int = ETA,
    min_peers: int = MIN_PEERS,
    eval_every: int | None = None,
) -> bool:
    """Whole decision for one evaluation of one run (pure; see the module docstring)."""
    if not math.isfinite(val_loss):
        return True
    if step >= steps:  # the final evaluation: the run is done, its result costs nothing more
        return False
    rung = current_rung(step, rungs_for(steps, eta, eval_every=eval_every))
    if rung is None:
        return False
    curve = [*(p for p in own_curve if p[0] != step), (step, val_loss)]
    own = value_at(curve, rung)
    if own is None:
        return False
    peer_values = [
        v
        for p in peers
        if reached(p.curve, rung) and same_memory_class(own_bytes, p.state_bytes_per_param)
        for v in [value_at(p.curve, rung)]
        if v is not None
    ]
    return sha_should_prune(own, peer_values, eta=eta, min_peers=min_peers)


def should_prune_run(run_id: int, step: int, val_loss: float) -> bool:
    """The trainer's hook: should run ``run_id`` (of a study trial) stop at ``step``?

    Opens its own session; runs without a trial are never pruned; a study spec may turn pruning
    off with ``"pruning": false``.
    """
    with session_scope() as session:
        run = session.get(Run, run_id)
        study_id = _pruning_study(session, run)
        if run is None or study_id is None:
            return False
        rows, curves = _study_curves(session, study_id)
    peers = [
        PeerRun(tuple(curves[r.id]), r.state_bytes_per_param)
        for r in rows
        if r.trial_id != run.trial_id
    ]
    own_bytes = next((r.state_bytes_per_param for r in rows if r.id == run_id), None)
    own_curve = curves.get(run_id, [])
    every = _eval_every(run.workload)
    return decide(step, val_loss, own_curve, own_bytes, peers, run.steps, eval_every=every)


def _pruning_study(session: Session, run: Run | None) -> int | None:
    """The id of the study ``run`` is a trial of, when that study prunes; else None."""
    if run is None or run.trial_id is None:
        return None
    trial = session.get(SearchTrial, run.trial_id)
    study = session.get(SearchStudy, trial.study_id) if trial else None
    if study is None or not study.spec.get("pruning", True):
        return None
    return study.id


def _study_curves(
    session: Session, study_id: int
) -> tuple[list[Any], dict[int, list[tuple[int, float]]]]:
    """The study's trained runs (id, trial_id, bytes/param) and their evaluation curves."""
    rows = session.execute(
        select(Run.id, Run.trial_id, Run.state_bytes_per_param)
        .join(SearchTrial, Run.trial_id == SearchTrial.id)
        .where(SearchTrial.study_id == study_id, Run.reused_from_id.is_(None))
    ).all()
    curves: dict[int, list[tuple[int, float]]] = {r.id: [] for r in rows}
    metrics = session.execute(
        select(RunMetric.run_id, RunMetric.step, RunMetric.val_loss).where(
            RunMetric.run_id.in_(list(curves)), RunMetric.val_loss.is_not(None)
        )
    )
    for m in metrics:
        curves[m.run_id].append((m.step, float(m.val_loss)))
    return list(rows), curves


def _eval_every(workload: str) -> int | None:
    try:
        return int(get_workload(workload).eval_every)
    except NotFound:  # a workload that left the catalog: rungs at the raw fractions
        return None
