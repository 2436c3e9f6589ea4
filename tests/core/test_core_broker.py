"""The Celery client (send by name, queues) and the worker app's long-task settings."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def memory_broker(data_dir: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from core.broker import get_celery_client

    monkeypatch.setenv("OPTFORGE_BROKER_URL", "memory://")
    from core.config import get_settings

    get_settings.cache_clear()
    get_celery_client.cache_clear()
    yield get_celery_client()
    get_celery_client.cache_clear()


def _take(app, queue: str):  # type: ignore[no-untyped-def]
    from kombu.simple import Empty

    with app.connection_for_read() as conn:
        q = conn.SimpleQueue(queue)
        try:
            msg = q.get(timeout=0.5)
        except Empty:
            return None
        msg.ack()
        return msg.headers["task"], msg.payload[0]


def test_dispatch_sends_by_name_to_the_right_queue(memory_broker) -> None:  # type: ignore[no-untyped-def]
    from core.broker import dispatch_run, dispatch_study_tick

    dispatch_run(41, "gpu")
    dispatch_run(42)
    dispatch_study_tick(7)
    assert _take(memory_broker, "gpu") == ("optforge.train_run", [41])
    assert _take(memory_broker, "cpu") == ("optforge.train_run", [42])
    assert _take(memory_broker, "control") == ("optforge.study_tick", [7])
    assert _take(memory_broker, "cpu") is None


def test_dispatch_rejects_unknown_queue(memory_broker) -> None:  # type: ignore[no-untyped-def]
    from core.broker import dispatch_run

    with pytest.raises(ValueError, match="cpu"):
        dispatch_run(1, "tpu")


def test_embedded_default_is_sqla_sqlite(data_dir: Path) -> None:
    from core.broker import get_celery_client

    get_celery_client.cache_clear()
    url = get_celery_client().conf.broker_url
    get_celery_client.cache_clear()
    assert url == f"sqla+sqlite:///{data_dir / 'broker.db'}"


def test_worker_app_is_configured_for_long_tasks(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.config import Settings
    from workers.celery_app import create_celery_app

    monkeypatch.setenv("OPTFORGE_BROKER_URL", "redis://127.0.0.1:6379/9")
    monkeypatch.setenv("OPTFORGE_VISIBILITY_TIMEOUT_S", "7200")
    conf = create_celery_app(Settings()).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_disable_prefetch
    assert conf.broker_transport_options["visibility_timeout"] == 7200
    assert set(conf.include) == {"workers.tasks", "workers.study_tasks", "workers.bench_tasks"}
    queues = {q.name for q in conf.task_queues}
    assert queues == {"cpu", "gpu", "gpu-2", "gpu-4", "gpu-8", "control"}  # gpu-N: N-GPU runs


def test_worker_registers_the_task_names() -> None:
    from workers.celery_app import app

    app.loader.import_default_modules()
    assert {"optforge.train_run", "optforge.reap", "optforge.study_tick"} <= set(app.tasks)


def test_worker_cli_queue_parsing() -> None:
    import typer

    from optforge.cli.service_cmds import parse_queues, worker_argv

    assert parse_queues("gpu") == ["gpu", "control"]
    assert parse_queues("cpu, gpu,cpu") == ["cpu", "gpu", "control"]
    with pytest.raises(typer.BadParameter, match="cpu, gpu"):
        parse_queues("tpu")
    argv = worker_argv(["gpu", "control"], 2, "info", "prefork")
    assert "--queues=gpu,control" in argv and "--concurrency=2" in argv
