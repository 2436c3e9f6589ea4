"""Celery task ``optforge.benchmark_tick``: one scheduling step of a benchmark.

Sent by ``train_run`` when a benchmark's run reaches a terminal status, by the reaper for running
benchmarks, and by ``POST /v1/benchmarks``. Ticks of one benchmark serialise on its row lock, so
duplicate or concurrent deliveries are harmless. No torch import here.
"""

from __future__ import annotations

import logging

from celery import shared_task
from sqlalchemy import select

from core.db import session_scope
from core.models import Benchmark, BenchmarkStatus
from search.bench_scheduler import tick

log = logging.getLogger(__name__)


@shared_task(name="optforge.benchmark_tick", ignore_result=True, acks_late=False)
def benchmark_tick(benchmark_id: int) -> dict[str, int]:
    """Tell finished tuning trials, ask new ones, start confirmation seeds (bench_scheduler)."""
    try:
        counts = tick(int(benchmark_id))
    except LookupError:
        log.warning("benchmark_tick: benchmark %s does not exist", benchmark_id)
        return {}
    log.info("benchmark_tick %s: %s", benchmark_id, counts)
    return counts


def running_benchmark_ids() -> list[int]:
    """Ids of running benchmarks (the reaper sends ``benchmark_tick`` for each)."""
    with session_scope() as session:
        return list(
            session.scalars(
                select(Benchmark.id).where(Benchmark.status == BenchmarkStatus.running)
            )
        )
