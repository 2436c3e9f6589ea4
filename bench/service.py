"""Benchmark (not a test): service latencies against real PostgreSQL + Redis.

1. POST -> worker-start latency: ``POST /v1/experiments`` (one run, the in-process API app)
   until a real ``optforge worker`` (one process, Redis broker) has claimed the run
   (``runs.started_at``). Sequential: each run finishes before the next POST; warm-ups dropped.
2. Leaderboard: ``GET /v1/leaderboard?workload=synthetic-lm&steps=100`` over 10,000 runs in
   Postgres (p50/p99 of the HTTP call through the app, and of ``records.leaderboard``).
   Target: p99 < 50 ms.

Uses a throw-away Postgres database (dropped at the end) and a Redis db nobody else is
connected to (picked automatically, flushed).

    .venv/bin/python bench/service.py --posts 30 --runs 10000 --queries 200
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(pct(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
    }


def make_database(admin_url: str) -> str:
    from sqlalchemy import create_engine, text

    name = f"optforge_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    engine.dispose()


def start_worker(log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPTFORGE_TORCH_THREADS="1")
    cmd = [sys.executable, "-c", "from optforge.cli import main; main()", "worker"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd + ["--queues=cpu", "--concurrency=1"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 90
    while " ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)
    return proc


def free_redis_db(base: str) -> str:
    """A Redis db that is empty and has no client connected (other runs of this bench, tests,
    workers): a foreign worker on the same db would swallow our messages."""
    import redis

    admin = redis.Redis.from_url(base)
    busy = {int(c["db"]) for c in admin.client_list()}
    for db in range(15, 0, -1):
        if db not in busy and redis.Redis.from_url(f"{base}/{db}").dbsize() == 0:
            return f"{base}/{db}"
    raise RuntimeError("no free Redis db; pass --redis-url")


def post_latency(client: Any, headers: dict[str, str], posts: int, warmup: int) -> list[float]:
    """Seconds from the POST until the worker claimed the run, for each measured POST."""
    from core.db import session_scope
    from core.models import Run

    out: list[float] = []
    for i in range(posts + warmup):
        spec = {"recipes": ["adamw"], "workload": "synthetic-lm", "steps": 1, "seeds": [1000 + i]}
        t0 = datetime.now(UTC)
        r = client.post("/v1/experiments", json=spec, headers=headers)
        assert r.status_code == 202, r.text
        run_id = r.json()["runs"][0]["id"]
        started, deadline = None, time.monotonic() + 120
        while time.monotonic() < deadline:
            with session_scope() as s:
                run = s.get_one(Run, run_id)
                started, status = run.started_at, run.status
            if started is not None and status not in ("queued", "running"):
                break
            time.sleep(0.005)
        assert started is not None, f"run {run_id} never started"
        started = started if started.tzinfo else started.replace(tzinfo=UTC)
        if i >= warmup:
            out.append((started - t0).total_seconds())
    return out


def _recipe_rows(n_recipes: int, now: datetime) -> list[dict[str, Any]]:
    return [
        {"hash": f"bench{i:04d}", "name": f"r{i}", "canonical": {"lr": 0.01}, "created_at": now}
        for i in range(n_recipes)
    ]


def _run_row(k: int, ids: list[int], rng: random.Random, now: datetime) -> dict[str, Any]:
    """Run ``k``: recipe ``k % len(ids)``, one of 4 lrs, a seed; 10 % on another board, 5 % failed."""
    rid = ids[k % len(ids)]
    other = k % 10 == 9  # 10 % of runs on another (workload, steps) board
    return {
        "recipe_id": rid,
        "workload": "shakespeare-lm" if other else "synthetic-lm",
        "steps": 100,
        "seed": k // (len(ids) * 4),
        "lr": [0.001, 0.003, 0.01, 0.03][(k // len(ids)) % 4],
        "queue": "cpu",
        "status": "succeeded" if k % 20 else "failed",
        "attempts": 1,
        "cancel_requested": False,
        "final_val_loss": 2.0 + rng.random(),
        "steps_to_target": rng.choice([None, 50, 80]),
        "tokens_per_s": 1e4 * (1 + rng.random()),
        "state_bytes": 1000 * (rid % 9 + 1),
        "n_params": 1000,
        "state_bytes_per_param": float(rid % 9 + 1),
        "created_at": now,
    }


def fill_runs(n_runs: int, n_recipes: int = 100, seed: int = 0) -> None:
    """n_runs succeeded runs on synthetic-lm/100 steps: recipes x lrs x seeds, plus noise."""
    from sqlalchemy import insert, text

    from core.db import get_engine
    from core.models import Recipe, Run

    rng = random.Random(seed)
    now = datetime.now(UTC)
    engine = get_engine()
    with engine.begin() as conn:
        conn.execute(insert(Recipe), _recipe_rows(n_recipes, now))
        ids = [r[0] for r in conn.execute(text("SELECT id FROM recipes ORDER BY id"))]
        rows = [_run_row(k, ids, rng, now) for k in range(n_runs)]
        conn.execute(insert(Run), rows)
        conn.execute(text("ANALYZE"))


def leaderboard_latency(client: Any, queries: int) -> tuple[list[float], list[float]]:
    from core.db import session_scope
    from records.leaderboard import leaderboard

    http, direct = [], []
    for i in range(queries + 5):
        t0 = time.perf_counter()
        r = client.get("/v1/leaderboard", params={"workload": "synthetic-lm", "steps": 100})
        t1 = time.perf_counter()
        assert r.status_code == 200 and r.json()["total"] > 0, r.text
        with session_scope() as s:
            t2 = time.perf_counter()
            leaderboard(s, "synthetic-lm", 100)
            t3 = time.perf_counter()
        if i >= 5:
            http.append(t1 - t0)
            direct.append(t3 - t2)
    return http, direct


def sql_execution_ms(repeats: int = 20) -> float:
    """Postgres's own execution time of the leaderboard query (EXPLAIN ANALYZE), median."""
    from sqlalchemy import text

    from core.db import session_scope
    from records.leaderboard import _best_lr_query

    stmt = _best_lr_query("synthetic-lm", 100)
    sql = str(stmt.compile(compile_kwargs={"literal_binds": True}))
    times = []
    with session_scope() as s:
        for _ in range(repeats):
            plan = s.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")).scalar_one()
            times.append(float(plan[0]["Execution Time"]))
    return round(statistics.median(times), 2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument(
        "--redis-url", default="", help="default: a free db of redis://127.0.0.1:6379 (15..1)"
    )
    parser.add_argument("--posts", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    return parser


def _prepare_database(url: str) -> str:
    """Migrate the throw-away database; return a fresh API key."""
    from core.db import session_scope
    from migrations.runner import upgrade
    from records.api_keys import create_api_key

    upgrade(url)
    with session_scope() as s:
        return create_api_key(s, "bench")


def _measure(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """Both measurements through the in-process app (the worker is running)."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    results: dict[str, Any] = {}
    with TestClient(create_app()) as client:
        lat = post_latency(client, {"Authorization": f"Bearer {key}"}, args.posts, args.warmup)
        results["post_to_worker_start"] = summary(lat)
        fill_runs(args.runs)
        http, direct = leaderboard_latency(client, args.queries)
        results["leaderboard_get"] = summary(http)
        results["leaderboard_query"] = summary(direct)
        results["leaderboard_sql_execution_p50_ms"] = sql_execution_ms()
    results["runs_in_db"] = args.runs + args.posts + args.warmup
    results["redis_url"] = args.redis_url
    return results


def _teardown(args: argparse.Namespace, url: str, worker: subprocess.Popen[bytes] | None) -> None:
    """Kill the worker, drop the database, flush the Redis db."""
    import redis

    if worker is not None:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    from core.db import get_engine

    get_engine().dispose()
    drop_database(args.pg_admin_url, url)
    redis.Redis.from_url(args.redis_url).flushdb()


def main() -> None:
    args = _parser().parse_args()

    import redis

    args.redis_url = args.redis_url or free_redis_db("redis://127.0.0.1:6379")
    url = make_database(args.pg_admin_url)
    tmp = Path(tempfile.mkdtemp(prefix="optforge-bench-"))
    os.environ.update(
        OPTFORGE_DATABASE_URL=url,
        OPTFORGE_BROKER_URL=args.redis_url,
        OPTFORGE_DATA_DIR=str(tmp),
        OPTFORGE_AUTH_MODE="writes",
    )
    redis.Redis.from_url(args.redis_url).flushdb()
    worker = None
    try:
        key = _prepare_database(url)
        worker = start_worker(tmp / "worker.log")
        print(json.dumps(_measure(args, key), indent=2))
    except BaseException:
        log = tmp / "worker.log"
        if log.exists():
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
        raise
    finally:
        _teardown(args, url, worker)


if __name__ == "__main__":
    main()
