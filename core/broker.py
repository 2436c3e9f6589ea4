"""The Celery *client*: send tasks by name, never importing ``workers``.

The API, the scheduler and the reaper enqueue work through :func:`dispatch_run` and
:func:`dispatch_study_tick`. Messages carry only ids; the database row is the record.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from celery import Celery
from kombu import Exchange, Queue

from core.config import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

TRAIN_RUN = "optforge.train_run"
STUDY_TICK = "optforge.study_tick"
BENCHMARK_TICK = "optforge.benchmark_tick"
GpuCount = Literal[1, 2, 4, 8]  # processes of one run; a run of N > 1 GPUs goes to queue gpu-N
GPU_COUNTS: tuple[int, ...] = get_args(GpuCount)
RUN_QUEUES = ("cpu", "gpu", *(f"gpu-{n}" for n in GPU_COUNTS[1:]))
# Short control tasks (study ticks, reaps): every worker consumes this queue too.
CONTROL_QUEUE = "control"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Broker settings shared by the client and the worker app."""
    options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.broker_url.startswith("sqla+"):
        # kombu passes these to create_engine: wait on SQLite locks (API and worker write).
        options = {"connect_args": {"timeout": 30}}
    return {
        "broker_url": settings.broker_url,
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name)
            for name in (*RUN_QUEUES, CONTROL_QUEUE)
        ],
        "broker_transport_options": options,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": settings.default_queue,
        "task_serializer": "json",
        "accept_content": ["json"],
    }


def make_client(settings: Settings) -> Celery:
    """A bare Celery app (no task modules) for ``settings``."""
    if settings.broker_url.startswith("sqla+"):
        settings.ensure_dirs()
    app = Celery("optforge-client", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


class _ClientCache:
    """``get_celery_client()``: the process-wide Celery client for the current broker URL.

    Cached per URL, so a test that changes OPTFORGE_BROKER_URL (and clears the settings cache)
    gets a client for the new broker; ``get_celery_client.cache_clear()`` forgets them all.
    """

    def __init__(self) -> None:
        self._clients: dict[str, Celery] = {}
        self._lock = threading.Lock()

    def __call__(self) -> Celery:
        settings = get_settings()
        with self._lock:
            client = self._clients.get(settings.broker_url)
            if client is None:
                client = self._clients[settings.broker_url] = make_client(settings)
            return client

    def cache_clear(self) -> None:
        with self._lock:
            self._clients.clear()


get_celery_client = _ClientCache()


def run_queue(device_queue: str, gpus: GpuCount) -> str:
    """The queue of a run of ``gpus`` processes: ``cpu`` (gloo ranks on one CPU worker), ``gpu``
    (one GPU) or ``gpu-N`` (served by workers on nodes with N GPUs)."""
    return device_queue if device_queue == "cpu" or gpus == 1 else f"gpu-{gpus}"


def send_run(run_id: int, queue: str = "cpu") -> None:
    """Enqueue ``optforge.train_run(run_id)`` on ``queue`` (:data:`RUN_QUEUES`). Call after the
    commit."""
    if queue not in RUN_QUEUES:
        raise ValueError(f"queue must be one of {list(RUN_QUEUES)}, got {queue!r}")
    get_celery_client().send_task(TRAIN_RUN, args=[int(run_id)], queue=queue)


def dispatch_run(run_id: int, queue: str = "cpu") -> None:
    """:func:`send_run`, then stamp ``runs.dispatched_at`` in a session of its own (for callers
    without one; :func:`dispatch_runs` stamps a batch in the caller's session)."""
    send_run(run_id, queue)
    _mark_dispatched(int(run_id))


def dispatch_runs(session: Session, runs: Iterable[tuple[int, str]]) -> list[int]:
    """Send ``optforge.train_run`` for each committed ``(run id, queue)``, then stamp the sent
    runs' ``dispatched_at`` with one UPDATE in ``session`` and commit it. A send that fails is
    logged and left to the reaper, which re-sends queued runs; so is a stamp the database
    refuses (the messages are out; the reaper then goes by ``created_at``). Returns the sent
    ids."""

    sent: list[int] = []
    for run_id, queue in runs:
        try:
            send_run(run_id, queue)
        except Exception as exc:  # noqa: BLE001 - the reaper re-sends queued runs
            log.warning("dispatch of run %s failed (reaper will retry): %s", run_id, exc)
            continue
        sent.append(int(run_id))
    if sent:
        _stamp_dispatched(session, sent)
    return sent


def _stamp_dispatched(session: Session, run_ids: list[int]) -> None:
    from sqlalchemy import update
    from sqlalchemy.exc import SQLAlchemyError

    from core.models import Run, RunStatus

    try:
        session.execute(
            update(Run)
            .where(Run.id.in_(run_ids), Run.status == RunStatus.queued)
            .values(dispatched_at=datetime.now(UTC))
        )
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        log.warning("could not record dispatch of runs %s: %s", run_ids, exc)


def dispatch_study_tick(study_id: int) -> None:
    """Enqueue ``optforge.study_tick(study_id)`` on the control queue."""
    get_celery_client().send_task(STUDY_TICK, args=[int(study_id)], queue=CONTROL_QUEUE)


def dispatch_benchmark_tick(benchmark_id: int) -> None:
    """Enqueue ``optforge.benchmark_tick(benchmark_id)`` on the control queue."""
    get_celery_client().send_task(BENCHMARK_TICK, args=[int(benchmark_id)], queue=CONTROL_QUEUE)


def _mark_dispatched(run_id: int) -> None:
    """Record the send time, so the reaper re-sends only messages that may be lost."""
    from core.db import get_sessionmaker

    with get_sessionmaker()() as session:
        _stamp_dispatched(session, [run_id])


# ------------------------------------------------------------------------------------------
# which runs have a message in the broker (the reaper re-sends the others)
# ------------------------------------------------------------------------------------------

# kombu's Redis transport: a queue's messages live in lists ``queue`` and ``queue\x06\x16N``
# (priority steps), messages delivered but not yet acked in the hash ``unacked``.
_REDIS_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def pending_run_ids(settings: Settings | None = None) -> set[int] | None:
    """Run ids that have a ``train_run`` message waiting or unacked in the broker.

    None when the broker cannot be inspected (not Redis): the caller then falls back to the
    slow timer ``redispatch_after_s``. Raises the client's error when Redis is unreachable.
    """
    settings = settings or get_settings()
    if not settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=5)
    try:
        ids: set[int] = set()
        for queue in RUN_QUEUES:
            for suffix in _REDIS_PRIORITY_SUFFIXES:
                ids.update(_run_id(raw) for raw in client.lrange(queue + suffix, 0, -1))
        for raw in client.hvals("unacked"):
            ids.add(_run_id(raw, unacked=True))
    finally:
        client.close()
    ids.discard(-1)
    return ids


def _run_id(raw: bytes | str, unacked: bool = False) -> int:
    """The run id of a raw kombu message (``-1`` for anything else)."""
    try:
        message = json.loads(raw)
        if unacked:  # [message, exchange, routing_key]
            message = message[0]
        if message.get("headers", {}).get("task") != TRAIN_RUN:
            return -1
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return int(json.loads(body)[0][0])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return -1
