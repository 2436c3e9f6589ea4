"""The worker's Celery app: late acks, prefetch 1, queues cpu/gpu/control, a reaper thread.

Start it with ``optforge worker [--queues gpu] [--concurrency N]`` (``celery -A
workers.celery_app worker`` works too). The parent process never imports torch, so CUDA is
first touched inside the forked pool processes. Each worker main process runs a reaper thread
every ``reaper_interval_s`` (works on Redis and on the embedded broker alike, no beat process);
several workers reaping at once is harmless because every reaper step is a conditional UPDATE.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from typing import Any

from celery import Celery, signals
from kombu.transport.sqlalchemy import Transport

from core.broker import celery_config, get_celery_client
from core.config import Settings, get_settings
from core.db import get_engine, is_transient
from core.process import die_with_parent
from workers.reaper import reap_once

log = logging.getLogger(__name__)

TASK_MODULES = ["workers.tasks", "workers.study_tasks", "workers.bench_tasks"]


def worker_config(settings: Settings) -> dict[str, Any]:
    """Celery settings of the worker (client settings plus the long-task ones, services §3.1)."""
    conf = celery_config(settings)
    conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,  # safe: the DB claim makes a redelivery a no-op
        worker_prefetch_multiplier=1,
        # On a broker connection loss keep training: the redelivered message cannot claim the
        # run again, so continuing is both safe and cheaper than restarting the run.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        include=TASK_MODULES,
        worker_send_task_events=False,
        task_track_started=False,
        # Read by the pool-process init hook below (None = leave torch's default).
        optforge_torch_threads=settings.torch_threads,
        optforge_reaper_interval_s=settings.reaper_interval_s,
    )
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # Fetch a message only when a pool process is free: a reserved message would sit
        # unacked, ageing toward the visibility timeout (Celery >= 5.6, Redis only).
        conf["worker_disable_prefetch"] = True
    return conf


def create_celery_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    if settings.broker_url.startswith("sqla+"):
        settings.ensure_dirs()
        _fast_sqla_polling()
    app = Celery("optforge")
    app.conf.update(worker_config(settings))
    return app


def _fast_sqla_polling(seconds: float = 0.25) -> None:
    """The embedded broker polls its SQLite table (kombu's default: every 1 s)."""
    Transport.polling_interval = seconds


app = create_celery_app()


# ------------------------------------------------------------------------------------------
# pool processes: no shared DB connections, torch threads, die with the parent
# ------------------------------------------------------------------------------------------


@signals.worker_process_init.connect
def _init_pool_process(**_: Any) -> None:
    die_with_parent()
    get_engine().dispose(close=False)  # connections inherited through fork are the parent's
    get_celery_client.cache_clear()  # and so is the reaper's broker client
    threads = app.conf.get("optforge_torch_threads")
    if threads:
        import torch  # pool children only: the worker's main process never imports torch

        torch.set_num_threads(int(threads))


# ------------------------------------------------------------------------------------------
# reaper thread in the worker main process
# ------------------------------------------------------------------------------------------

_reaper_stop = threading.Event()


def _reaper_loop(interval: float) -> None:
    while not _reaper_stop.wait(interval * random.uniform(0.8, 1.2)):
        try:
            counts = reap_once()
        except Exception as exc:  # noqa: BLE001 - keep reaping; the next pass may succeed
            if is_transient(exc):  # the database restarts: one line, not a traceback
                log.warning("reaper pass skipped, database unavailable: %s", exc)
            else:
                log.exception("reaper pass failed")
            continue
        if any(counts.values()):
            log.info("reaper (pid %s): %s", os.getpid(), counts)


@signals.worker_ready.connect
def _start_reaper(sender: Any = None, **_: Any) -> None:
    interval = float(app.conf.get("optforge_reaper_interval_s") or 30.0)
    if interval <= 0:
        return
    _reaper_stop.clear()
    threading.Thread(
        target=_reaper_loop, args=(interval,), name="optforge-reaper", daemon=True
    ).start()


@signals.worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    _reaper_stop.set()
