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
