"""`optforge search` loop (same scheduler path) and `optforge dashboard`."""

from __future__ import annotations

from cli_checks import refused_in_one_line
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


def test_cli_help_and_dashboard_hint(data_dir, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from optforge.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["search", "--help"])
    assert out.exit_code == 0 and "--trials" in out.output and "--parallel" in out.output
    import importlib.util

    from optforge.cli import search_cmds

    real_find = importlib.util.find_spec
    # neither a console script beside python / on PATH nor the module: say how to install it
    monkeypatch.setattr(search_cmds, "dashboard_command", lambda: None)
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "optuna_dashboard" else real_find(name, *a),
    )  # fmt: skip
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
    detail = json.loads(out.stdout.strip().splitlines()[-1])
    assert detail["status"] == "completed" and detail["progress"]["complete"] == 2
    assert detail["pareto_front"] and detail["steps"] == 10
    trial = detail["pareto_front"][0]
    assert trial["runs"][0]["status"] == "succeeded" and trial["runs"][0]["final_val_loss"] > 0
    assert trial["values"][1] == trial["runs"][0]["state_bytes_per_param"] > 0
    from core.db import session_scope
    from core.models import SearchStudy

    with session_scope() as s:  # recorded in the embedded default's database, tagged
        assert [(st.id, st.origin) for st in s.query(SearchStudy)] == [(detail["id"], "cli")]


def test_cli_search_mistakes_are_one_line(data_dir) -> None:  # type: ignore[no-untyped-def]
    from optforge.cli import app

    for args, message in [
        (["--steps", "0"], "--steps: Input should be greater than or equal to 1"),
        (["--trials", "0"], "--trials: Input should be greater than or equal to 1"),
        (["--parallel", "0"], "--parallel: Input should be greater than or equal to 1"),
        (["--sampler", "nope"], "--sampler: unknown sampler 'nope'"),
        (["--steps", "99999"], "--steps: steps 99999 exceeds the service limit"),
    ]:
        refused_in_one_line(app, ["search", "--workload", "synthetic-lm", *args], message)
    out = CliRunner().invoke(app, ["search", "--help"], env={"COLUMNS": "200"})
    flags = [ln for ln in out.stdout.splitlines() if "--json" in ln or "--no-record" in ln]
    assert len(flags) == 2 and not any("<bool>" in ln for ln in flags), flags


def test_cli_search_no_record_keeps_the_database_clean(data_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from core.config import get_settings
    from core.db import session_scope
    from core.models import SearchStudy
    from migrations.runner import upgrade
    from optforge.cli import app

    upgrade()
    space = tmp_path / "s.yaml"
    space.write_text(
        "norms: {sequences: [[sign]]}\nmomentum: {placement: [none]}\nlr: {low: 0.001, high: 0.01}\n"
    )
    args = ["search", "--workload", "synthetic-lm", "--trials", "1", "--steps", "5"]
    out = CliRunner().invoke(
        app, [*args, "--parallel", "1", "--space", str(space), "--json", "--no-record"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.strip().splitlines()[-1])["status"] == "completed"
    assert "--no-record: study kept in" in out.stderr
    from settings_reset import reset_settings_caches

    reset_settings_caches()
    import os

    for var in ("OPTFORGE_DATABASE_URL", "OPTFORGE_OPTUNA_STORAGE_URL", "OPTFORGE_BROKER_URL",
                "OPTFORGE_CACHE_DIR"):  # fmt: skip
        os.environ.pop(var, None)
    reset_settings_caches()
    assert str(data_dir) in get_settings().database_url
    with session_scope() as s:
        assert s.query(SearchStudy).count() == 0  # nothing in the embedded default's database
