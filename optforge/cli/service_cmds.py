"""CLI commands: service (``worker``, ``db upgrade|downgrade|current``, ``up``).

``optforge serve``, ``keys`` and ``submit`` are in ``api_cmds``. Heavy imports (celery,
alembic, uvicorn) happen inside the commands.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Annotated

import typer

db_app = typer.Typer(help="Database migrations (Alembic, version table optforge_alembic_version).")


def parse_queues(queues: str) -> list[str]:
    """``"gpu"`` / ``"cpu,gpu"`` / ``"gpu-4"`` -> run queues plus the control queue every worker
    serves (a node with N GPUs serves ``gpu-N`` with concurrency 1: each run takes all N)."""
    from core.broker import CONTROL_QUEUE, RUN_QUEUES

    names = [q.strip() for q in queues.split(",") if q.strip()]
    bad = [q for q in names if q not in RUN_QUEUES]
    if bad or not names:
        raise typer.BadParameter(f"queues must be among {', '.join(RUN_QUEUES)}; got {queues!r}")
    return [*dict.fromkeys(names), CONTROL_QUEUE]


def worker_argv(queues: list[str], concurrency: int, loglevel: str, pool: str) -> list[str]:
    """Arguments for ``celery worker`` (no mingle/gossip: the embedded broker has no fanout)."""
    return [
        "worker",
        f"--queues={','.join(queues)}",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        f"--pool={pool}",
        f"--hostname=optforge-{os.getpid()}@%h",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
    ]


def worker(
    queues: Annotated[
        str, typer.Option(help="comma-separated: cpu, gpu, gpu-2, gpu-4, gpu-8")
    ] = "",
    concurrency: Annotated[int, typer.Option(min=1, help="training processes")] = 1,
    loglevel: Annotated[str, typer.Option(help="celery log level")] = "info",
    pool: Annotated[str, typer.Option(help="celery pool: prefork | solo")] = "prefork",
) -> None:
    """Run a Celery worker (late acks, prefetch 1, a reaper thread) on QUEUES."""
    from core.config import get_settings
    from workers.celery_app import app as celery_app

    settings = get_settings()
    names = parse_queues(queues or settings.default_queue)
    cpus = os.cpu_count() or 1
    celery_app.conf.optforge_torch_threads = settings.torch_threads or max(1, cpus // concurrency)
    if "gpu" in names:  # a fresh process per run releases the CUDA context and allocator
        celery_app.conf.worker_max_tasks_per_child = 1
    typer.echo(f"optforge worker: queues {','.join(names)}, concurrency {concurrency}")
    celery_app.worker_main(worker_argv(names, concurrency, loglevel, pool))


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Migrate the database of record up to REVISION (default: head)."""
    from migrations.runner import current, upgrade

    upgrade(revision=revision)
    typer.echo(f"database at revision {current()}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="e.g. base or -1")]) -> None:
    """Migrate the database of record down to REVISION."""
    from migrations.runner import current, downgrade

    downgrade(None, revision)
    typer.echo(f"database at revision {current()}")


@db_app.command("current")
def db_current() -> None:
    """Print the revision of the database of record."""
    from migrations.runner import current

    typer.echo(current() or "(empty database)")


def up(
    host: Annotated[str | None, typer.Option(help="API host (default: settings)")] = None,
    port: Annotated[int | None, typer.Option(help="API port (default: settings)")] = None,
) -> None:
    """Embedded service on this machine: migrate, one worker, the API (Ctrl-C stops all)."""
    import uvicorn

    from core.config import get_settings
    from migrations.runner import upgrade

    settings = get_settings()
    settings.ensure_dirs()
    upgrade()
    host, port = host or settings.api_host, port or settings.api_port
    worker_proc = start_worker_subprocess()
    url = settings.public_url if port == settings.api_port else f"http://{host}:{port}"
    mode = "embedded (SQLite + local broker)" if settings.embedded else "configured servers"
    typer.echo(f"optforge up: {mode}; data in {settings.data_dir}")
    typer.echo(f"optforge up: API at {url}  (docs: {url}/docs)")
    # uvicorn re-raises the signal that stopped it: make SIGTERM (docker stop, systemd) unwind
    # through `finally` like Ctrl-C does, so the worker is stopped too, never orphaned.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run("api.main:create_app", factory=True, host=host, port=port, log_level="info")
    finally:
        stop_process(worker_proc)
        typer.echo("optforge up: stopped")


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def start_worker_subprocess(concurrency: int = 1) -> subprocess.Popen[bytes]:
    """``optforge worker`` as a child process (same environment, so the same settings)."""
    cmd = [sys.executable, "-c", "from optforge.cli import main; main()", "worker"]
    cmd += [f"--concurrency={concurrency}", "--queues=cpu,gpu"]
    return subprocess.Popen(cmd, start_new_session=True)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM a child (warm shutdown), then SIGKILL its process group if it does not exit."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command()(worker)
    app.command()(up)
    app.add_typer(db_app, name="db")
