"""Service fixtures: env for Postgres + Redis, a migrated database, real worker processes.

* ``service_env``: OPTFORGE_* pointing at the session's throw-away Postgres databases and Redis
  db (flushed), caches of settings/engines/Celery client reset; returns the env dict.
* ``migrated_db``: the database of record emptied and migrated to head (Alembic); its URL.
* ``start_worker(queues="cpu", concurrency=1, env=None)``: starts a real ``optforge worker``
  subprocess with the current OPTFORGE_* environment (plus ``env``) passed explicitly, waits
  until Celery says ready, logs to a file (printed at teardown, so shown for failed tests) and
  always kills it (and its pool processes) at teardown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90.0
T = TypeVar("T")


def reset_service_caches() -> None:
    """Forget settings, engines and the Celery client so a changed environment takes effect."""
    from core.broker import get_celery_client
    from core.config import get_settings
    from core.db import get_engine

    get_settings.cache_clear()
    get_engine.cache_clear()
    get_celery_client.cache_clear()


@pytest.fixture
def service_env(
    pg_url: str,
    pg_optuna_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[dict[str, str]]:
    """OPTFORGE_* for Postgres + Redis (settings reset before and after)."""
    import redis

    env = {
        "OPTFORGE_DATA_DIR": str(tmp_path / "optforge"),
        "OPTFORGE_DATABASE_URL": pg_url,
        "OPTFORGE_OPTUNA_STORAGE_URL": pg_optuna_url,
        "OPTFORGE_BROKER_URL": redis_url,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    redis.Redis.from_url(redis_url).flushdb()
    reset_service_caches()
    yield env
    reset_service_caches()


def _fresh_schema(url: str) -> None:
    from sqlalchemy import text

    from core.db import make_engine
    from core.models import Base
    from migrations.runner import VERSION_TABLE

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            Base.metadata.drop_all(conn)
            conn.execute(text(f"DROP TABLE IF EXISTS {VERSION_TABLE}"))
    finally:
        engine.dispose()


@pytest.fixture
def migrated_db(service_env: dict[str, str]) -> str:
    """The (session) Postgres database emptied and migrated to head; returns its URL."""
    from migrations.runner import upgrade

    url = service_env["OPTFORGE_DATABASE_URL"]
    _fresh_schema(url)
    upgrade(url)
    reset_service_caches()
    return url


def schema_diff(url: str) -> list:  # type: ignore[type-arg]
    """Autogenerate's diff between the database at ``url`` and core.models (empty = in sync)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from core.db import make_engine
    from core.models import Base
    from migrations.runner import VERSION_TABLE

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


# Our tables (Optuna's studies/trials/alembic_version live in their own storage).
APP_TABLES = {
    "recipes",
    "experiments",
    "runs",
    "run_metrics",
    "api_keys",
    "search_studies",
    "search_trials",
    "benchmarks",
    "benchmark_cells",
    "web_sessions",
}


def table_names(url: str) -> set[str]:
    from sqlalchemy import inspect

    from core.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


@dataclass
class WorkerProcess:
    """A running ``optforge worker``; ``pid`` is the Celery main process."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the main process only (pool processes die with it: PR_SET_PDEATHSIG)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Kill the whole process group (main + pool processes)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a worker subprocess: this process's env (with monkeypatched
    OPTFORGE_*), the repository on PYTHONPATH, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("OPTFORGE_TORCH_THREADS", "1")
    env.update(extra or {})
    return env


def spawn_worker(
    log_path: Path,
    queues: str = "cpu",
    concurrency: int = 1,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
) -> WorkerProcess:
    """Start ``optforge worker`` in its own process group; wait for Celery's "ready"."""
    cmd = [sys.executable, "-c", "from optforge.cli import main; main()", "worker"]
    cmd += [f"--queues={queues}", f"--concurrency={concurrency}", "--loglevel=info"]
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=worker_env(env),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log_file.close()
    worker = WorkerProcess(proc, log_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while wait_ready and " ready." not in worker.log():
        if proc.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            raise AssertionError(f"worker did not start (rc={proc.poll()}):\n{worker.log()}")
        time.sleep(0.2)
    return worker


@pytest.fixture
def start_worker(
    tmp_path: Path,
) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory of real worker processes; all are killed (and their logs printed) at teardown."""
    started: list[WorkerProcess] = []

    def start(
        queues: str = "cpu", concurrency: int = 1, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started)}.log"
        worker = spawn_worker(log_path, queues, concurrency, env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    for worker in started:  # captured by pytest: shown with the report of a failed test
        print(f"----- {worker.log_path.name} (pid {worker.pid}) -----\n{worker.log()[-20000:]}")


# ------------------------------------------------------------------------------------------
# helpers for service tests
# ------------------------------------------------------------------------------------------

TERMINAL = {"succeeded", "failed", "diverged", "cancelled", "pruned"}


def run_rows(run_ids: list[int]) -> list[dict[str, object]]:
    """Status, attempts and metric counts of runs (fresh session each call)."""
    from sqlalchemy import func, select

    from core.db import session_scope
    from core.models import Run, RunMetric

    with session_scope() as s:
        out = []
        for run in s.scalars(select(Run).where(Run.id.in_(run_ids)).order_by(Run.id)):
            counts = s.execute(
                select(func.count(), func.count(func.distinct(RunMetric.step)))
                .select_from(RunMetric)
                .where(RunMetric.run_id == run.id)
            ).one()
            out.append(
                {
                    "id": run.id,
                    "status": run.status,
                    "attempts": run.attempts,
                    "metrics": counts[0],
                    "distinct_steps": counts[1],
                    "final_val_loss": run.final_val_loss,
                    "failure_reason": run.failure_reason,
                }
            )
        return out


def wait_for_runs(
    run_ids: list[int],
    timeout_s: float,
    done: Callable[[dict[str, object]], bool] = lambda r: r["status"] in TERMINAL,
    workers: list[WorkerProcess] | None = None,
) -> list[dict[str, object]]:
    """Poll until ``done`` holds for every run; AssertionError (with worker logs) on timeout."""
    deadline = time.monotonic() + timeout_s
    rows = run_rows(run_ids)
    while time.monotonic() < deadline:
        rows = run_rows(run_ids)
        if len(rows) == len(run_ids) and all(done(r) for r in rows):
            return rows
        time.sleep(0.5)
    logs = "\n".join(w.log()[-5000:] for w in workers or [])
    raise AssertionError(f"runs not done after {timeout_s}s: {rows}\n{logs}")


def wait_until(check: Callable[[], T], timeout_s: float, what: str, logs: Callable[[], str]) -> T:
    """The first truthy value of ``check()``, polled every 0.5 s; after ``timeout_s`` an
    AssertionError naming ``what``, with ``logs()`` (the processes' logs, read only then)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached after {timeout_s}s\n{logs()}")


def submit(spec: dict[str, object], dispatch: bool = True) -> list[int]:
    """Create an experiment through records.experiments, commit, then dispatch its runs."""
    from core.broker import dispatch_run
    from core.db import session_scope
    from records.experiments import ExperimentCreate, create_experiment

    with session_scope() as s:
        exp, ids = create_experiment(s, ExperimentCreate.model_validate(spec))
        queue = exp.runs[0].queue if exp.runs else "cpu"
    if dispatch:
        for run_id in ids:
            dispatch_run(run_id, queue)
    return ids
