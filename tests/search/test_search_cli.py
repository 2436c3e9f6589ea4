"""`optforge search` loop (same scheduler path) and `optforge dashboard`."""

from __future__ import annotations

import shutil

from test_scheduler import CRAFTED_SPACE, execute, new_study, trials_of
from typer.testing import CliRunner

from core.models import Base


def _db() -> None:
    from core.db import get_engine

    Base.metadata.create_all(get_engine())


def test_local_study_inline_and_with_two_processes(data_dir) -> None:  # type: ignore[no-untyped-def]
    from optforge.cli.search_cmds import pareto_table, run_local_study

    _db()
    seen: list[int] = []
    for parallel in (1, 2):
        sid = new_study(
            space=CRAFTED_SPACE,
            steps=12,
            n_trials=4,
            parallelism=parallel,
            pruning=False,
            sampler="random",
            seed=parallel,
        )
        detail = run_local_study(
            sid,
            parallel,
            execute=execute,
            on_progress=lambda d: seen.append(d["progress"]["asked"]),
        )
        assert detail["status"] == "completed" and detail["progress"]["complete"] == 4
        assert detail["pareto_front"] and pareto_table(detail).row_count >= 1
        assert all(len(t.runs) == 1 and t.runs[0].status == "succeeded" for t in trials_of(sid))
    assert max(seen) == 4


def test_cli_help_and_dashboard_hint(data_dir) -> None:  # type: ignore[no-untyped-def]
    from optforge.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["search", "--help"])
    assert out.exit_code == 0 and "--trials" in out.output and "--parallel" in out.output
    if shutil.which("optuna-dashboard") is None:
        out = runner.invoke(app, ["dashboard"])
        assert out.exit_code == 1 and "pip install" in out.output


def test_cli_rejects_invalid_space_file(data_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from optforge.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("norms: {sequences: [[row, adam]]}\nlr: [0.1]\n")
    out = CliRunner().invoke(app, ["search", "--space", str(bad), "--trials", "1"])
    assert out.exit_code == 2 and "stands alone" in out.output
    out = CliRunner().invoke(app, ["search", "--workload", "nope", "--trials", "1"])
    assert out.exit_code == 2 and "unknown workload" in out.output


def test_cli_search_trains_real_runs_and_prints_json(data_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`optforge search` end to end on the embedded default: real trainer, inline executor."""
    import json

    from optforge.cli import app

    space = tmp_path / "s.yaml"
    space.write_text(
        "norms: {sequences: [[sign], [row, col]]}\nmomentum: {placement: [none]}\n"
        "lr: {low: 0.001, high: 0.01, log: true}\n"
    )
    args = ["search", "--workload", "synthetic-lm", "--trials", "2", "--steps", "10"]
    out = CliRunner().invoke(app, [*args, "--parallel", "1", "--space", str(space), "--json"])
    assert out.exit_code == 0, out.output
    detail = json.loads(out.output.strip().splitlines()[-1])
    assert detail["status"] == "completed" and detail["progress"]["complete"] == 2
    assert detail["pareto_front"] and detail["steps"] == 10
    trial = detail["pareto_front"][0]
    assert trial["runs"][0]["status"] == "succeeded" and trial["runs"][0]["final_val_loss"] > 0
    assert trial["values"][1] == trial["runs"][0]["state_bytes_per_param"] > 0
