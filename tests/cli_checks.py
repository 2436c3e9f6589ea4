"""Checks of the ``optforge`` CLI shared by the command tests (tests/workers/test_wk_cli.py,
tests/search/test_search_cli.py)."""

from __future__ import annotations

import typer
from typer.testing import CliRunner


def refused_in_one_line(app: typer.Typer, args: list[str], message: str) -> str:
    """Invoke the CLI with ``args``: it must exit 2 with a single stderr line ``error: ...``
    that contains ``message``, and no traceback. Returns that line."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.output
    return lines[0]
