"""Benchmark routes (/v1/benchmarks): the claims — equal-budget tuning, fresh seeds, CIs.

``POST /v1/benchmarks`` validates the spec (arms, horizons vs caps, seeds, budget), inserts the
benchmark and its cells, commits, and sends ``optforge.benchmark_tick`` by name; workers drive
it from there (every finished run ticks it again, and the reaper ticks running benchmarks).
``POST /v1/studies/{id}/benchmark`` promotes a study's Pareto candidates to a benchmark.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.deps import CallerDep, ReaderDep, SessionDep, WriterDep, ensure_owner
from core.models import Benchmark
from core.workloads import get_workload
from records.bench_report import confirmed_board, list_benchmarks, report
from records.runs import owner_of
from search.bench_promote import promotion_spec
from search.bench_scheduler import cancel_benchmark, create_benchmark
from search.bench_spec import ArmRef, BenchmarkSpec, TuningSpec

router = APIRouter(tags=["benchmarks"])
log = logging.getLogger("optforge.api")
BenchmarkId = Annotated[int, Path(ge=1, le=2**31 - 1)]
StudyId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class PromoteSpec(BaseModel):
    """Benchmark a study's Pareto-optimal trials (its exploratory results) against a baseline."""

    model_config = ConfigDict(extra="forbid")
    baseline: ArmRef = Field(default_factory=lambda: ArmRef(preset="adamw"))
    horizons: list[int] = Field(..., min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3])
    tuning: TuningSpec = Field(default_factory=TuningSpec)
    max_candidates: int = Field(3, ge=1, le=20, description="Pareto trials to take, best first")
    name: str | None = Field(None, max_length=200)


def send_first_tick(benchmark_id: int) -> None:
    """Hand the benchmark to the workers (the reaper ticks it too if the broker is down)."""
    from core.broker import dispatch_benchmark_tick

    try:
        dispatch_benchmark_tick(benchmark_id)
    except Exception as exc:  # noqa: BLE001 - the reaper ticks running benchmarks
        log.warning("first tick of benchmark %s not sent (reaper will): %s", benchmark_id, exc)


def _start(session: Session, spec: BenchmarkSpec, owner: str | None, origin: str) -> int:
    bench = create_benchmark(session, spec, owner=owner, origin=origin)  # RecipeError: Invalid
    session.commit()
    send_first_tick(bench.id)
    return bench.id


@router.post("/benchmarks", status_code=status.HTTP_202_ACCEPTED)
def create(spec: BenchmarkSpec, session: SessionDep, owner: WriterDep) -> dict[str, Any]:
    """Start a benchmark: 202 with its (empty) report; 422 with the field path if invalid."""
    bench_id = _start(session, spec, owner, "api")
    session.expire_all()
    return report(session, bench_id)


@router.get("/benchmarks")
def index(
    session: SessionDep,
    _reader: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Benchmarks, newest first, with progress counts."""
    return list_benchmarks(session, limit=limit)


@router.get("/benchmarks/{benchmark_id}")
def show(benchmark_id: BenchmarkId, session: SessionDep, _reader: ReaderDep) -> dict[str, Any]:
    """Status, progress and every cell: per-seed losses, mean, CI, p-value, speedups."""
    return report(session, benchmark_id)


@router.post("/benchmarks/{benchmark_id}/cancel")
def cancel(benchmark_id: BenchmarkId, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    """Cancel a running benchmark (only its owner or an admin key)."""
    owner = owner_of(session, Benchmark, benchmark_id)
    ensure_owner(caller, owner, f"benchmark {benchmark_id}")
    cancel_benchmark(session, benchmark_id)
    session.commit()
    return report(session, benchmark_id)


@router.get("/leaderboard/confirmed")
def confirmed(
    session: SessionDep,
    _reader: ReaderDep,
    workload: Annotated[str, Query(max_length=64)] = "shakespeare-lm",
) -> dict[str, Any]:
    """The confirmed view: only benchmarked cells (claims), by horizon then mean loss; the
    plain leaderboard stays, and is exploratory."""
    get_workload(workload)  # NotFound (404) listing the valid names
    return {
        "workload": workload,
        "evidence": "confirmed",
        "rows": confirmed_board(session, workload),
    }


@router.post("/studies/{study_id}/benchmark", status_code=status.HTTP_202_ACCEPTED)
def promote(
    study_id: StudyId, body: PromoteSpec, session: SessionDep, owner: WriterDep
) -> dict[str, Any]:
    """Promote a study's Pareto candidates to a benchmark (exploration -> claims)."""
    spec = promotion_spec(session, study_id, body.model_dump(exclude_none=True))
    bench_id = _start(session, spec, owner, "study")
    session.expire_all()
    return report(session, bench_id)
