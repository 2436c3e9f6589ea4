"""docker-compose.yml and the Dockerfile agree with the code (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from core.config import Settings
from optforge.cli import app

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _resolve(argv: list[str]) -> object:
    """Parse an `optforge ...` command line against the real CLI without running it.

    Typer vendors its own click, so groups are recognised by their ``resolve_command``.
    """
    assert argv[0] == "optforge"
    cmd = get_command(app)
    ctx = cmd.make_context("optforge", list(argv[1:]), resilient_parsing=False)
    while hasattr(cmd, "resolve_command"):
        remaining = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
        name, sub, rest = cmd.resolve_command(ctx, remaining)
        assert sub is not None, f"unknown command {name!r} in {argv}"
        cmd = sub
        ctx = cmd.make_context(name or "", list(rest), parent=ctx)
    return ctx


def test_compose_has_the_services() -> None:
    assert {"postgres", "redis", "api", "worker", "migrate"} <= set(SERVICES)


@pytest.mark.parametrize("service", sorted(s for s in SERVICES if "command" in SERVICES[s]))
def test_optforge_commands_exist(service: str) -> None:
    argv = SERVICES[service]["command"]
    if argv[0] != "optforge":
        pytest.skip(f"{service} runs {argv[0]}")
    _resolve(argv)


def test_env_vars_are_settings_fields() -> None:
    fields = set(Settings.model_fields)
    for name, svc in SERVICES.items():
        for var in svc.get("environment", {}) or {}:
            if var.startswith("OPTFORGE_"):
                assert var.removeprefix("OPTFORGE_").lower() in fields, (name, var)


def test_worker_reserves_gpu_and_listens_on_gpu_queue() -> None:
    worker = SERVICES["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in worker["command"][worker["command"].index("--queues") + 1]


def test_multi_gpu_worker_reserves_as_many_gpus_as_its_queue_names() -> None:
    from core.broker import RUN_QUEUES

    worker = SERVICES["worker-gpu4"]
    queue = worker["command"][worker["command"].index("--queues") + 1]
    assert queue in RUN_QUEUES and queue.startswith("gpu-")
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["count"] == int(queue.removeprefix("gpu-"))
    assert worker["command"][worker["command"].index("--concurrency") + 1] == "1"


def test_migrations_run_before_api_and_worker() -> None:
    for name in ("api", "worker"):
        dep = SERVICES[name]["depends_on"]["migrate"]
        assert dep["condition"] == "service_completed_successfully"
    assert SERVICES["migrate"]["command"][:3] == ["optforge", "db", "upgrade"]


def test_stateful_services_have_healthchecks_and_volumes() -> None:
    for name in ("postgres", "redis"):
        assert "healthcheck" in SERVICES[name]
        assert SERVICES[name]["volumes"]
    assert "healthcheck" in SERVICES["api"]


def test_dockerfile_copies_every_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for pkg in ("optforge", "optim_core", "core", "search", "workers", "api", "migrations"):
        assert f"COPY {pkg} ./{pkg}" in text
    assert "torch==2.13.0" in text


def test_gpu_worker_image_gets_cuda_torch_by_default() -> None:
    """The worker reserving a GPU runs the image ``migrate`` builds: CUDA wheels unless told."""
    assert SERVICES["worker"]["image"] == SERVICES["migrate"]["image"]
    args = SERVICES["migrate"]["build"]["args"]
    assert "TORCH_INDEX" in (ROOT / "Dockerfile").read_text()
    default = args["TORCH_INDEX"].split(":-", 1)[1].rstrip("}")
    assert default.startswith("https://download.pytorch.org/whl/cu"), default
