"""Benchmark (not a test): GET /v1/leaderboard through a real uvicorn process on Postgres.

Fills a throw-away Postgres database with ``bench/service.py``'s 10,000-run board (100
recipes x 4 lrs x seeds, 10 % on another board, 5 % failed), starts
``uvicorn --factory api.main:create_app`` and times keep-alive GETs with httpx; also times
``records.leaderboard.leaderboard`` in-process and the SQL alone. Target: HTTP p99 < 50 ms.

    .venv/bin/python bench/leaderboard_http.py --runs 10000 --queries 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import service as svc  # noqa: E402  (bench/service.py: make_database, fill_runs, summary)


def _time(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t0)
    return out


def _serve(port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app"]
    cmd += ["--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--port", type=int, default=8799)
    return parser


def _in_process(queries: int) -> tuple[list[float], list[float]]:
    """Seconds per ``records.leaderboard.leaderboard`` call and per run of its SQL alone."""
    from sqlalchemy import text

    from core.db import get_engine, session_scope
    from records.leaderboard import _best_lr_query, leaderboard

    sql = str(
        _best_lr_query("synthetic-lm", 100).compile(
            get_engine(), compile_kwargs={"literal_binds": True}
        )
    )
    with session_scope() as s:
        direct = _time(lambda: leaderboard(s, "synthetic-lm", 100), queries)
        raw = _time(lambda: s.execute(text(sql)).all(), queries)
    return direct, raw


def _over_http(port: int, queries: int) -> tuple[int, list[float]]:
    """The board's total and seconds per keep-alive GET against the uvicorn on ``port``."""
    import httpx

    params: dict[str, str | int] = {"workload": "synthetic-lm", "steps": 100}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for _ in range(200):
            try:
                if client.get("/v1/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        total = client.get("/v1/leaderboard", params=params).json()["total"]
        http = _time(lambda: client.get("/v1/leaderboard", params=params), queries)
    return total, http


def main() -> None:
    args = _parser().parse_args()
    url = svc.make_database(args.pg_admin_url)
    os.environ.update(OPTFORGE_DATABASE_URL=url, OPTFORGE_DATA_DIR=tempfile.mkdtemp())
    proc = None
    try:
        from migrations.runner import upgrade

        upgrade(url)
        svc.fill_runs(args.runs)
        direct, raw = _in_process(args.queries)
        proc = _serve(args.port)
        total, http = _over_http(args.port, args.queries)
        result = {
            "runs": args.runs,
            "recipes_on_board": total,
            "http_get_live_uvicorn": svc.summary(http),
            "search_leaderboard": svc.summary(direct),
            "sql_only": svc.summary(raw),
            "load_avg_1m": os.getloadavg()[0],
        }
        print(json.dumps(result, indent=2))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        from core.db import get_engine

        get_engine().dispose()
        svc.drop_database(args.pg_admin_url, url)


if __name__ == "__main__":
    main()
