"""The root CLI: help lists the command groups; version prints the stack."""

from __future__ import annotations

from typer.testing import CliRunner

from optforge.cli import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for cmd in ("version", "run", "compare", "workloads", "worker", "serve", "up", "search"):
        assert cmd in result.output, cmd


def test_version_prints_versions() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0, result.output
    for dist in ("optforge", "torch", "optuna", "celery"):
        assert any(line.startswith(dist + " ") for line in result.output.splitlines()), dist


def test_help_never_shows_a_type_after_a_flag() -> None:
    """``--json <bool>`` (issue 15): a flag takes no value, in every command's help."""
    commands = [c.name or c.callback.__name__ for c in app.registered_commands if c.callback]
    commands += [g.name for g in app.registered_groups if g.name]
    assert {"run", "compare", "search", "benchmark", "serve", "submit", "keys"} <= set(commands)
    for cmd in [None, *commands]:
        args = [cmd, "--help"] if cmd else ["--help"]
        out = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert out.exit_code == 0, (cmd, out.output)
        assert "<bool>" not in out.stdout, cmd
    serve = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).stdout
    assert "<int>" in serve  # options that take a value keep their type
