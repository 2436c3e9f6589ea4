"""The README's two set-up commands exist as Makefile targets, and CI runs the test one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, flags=re.MULTILINE))


def test_readme_quickstart_commands_are_make_targets() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    targets = _makefile_targets()
    assert {"demo", "test"} <= targets


def test_ci_runs_the_readme_test_command_with_services_required() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.MULTILINE)
    assert "OPTFORGE_REQUIRE_SERVICES=1" in ci


def test_make_test_lints_and_typechecks_first() -> None:
    text = (ROOT / "Makefile").read_text()
    test_rule = re.search(r"^test:(.*)$", text, flags=re.MULTILINE)
    assert test_rule is not None
    assert "lint" in test_rule.group(1) and "typecheck" in test_rule.group(1)
    assert "torch==2.13.0" in text  # torch first, pinned: a looser pin pulls a CUDA build


def test_every_cli_command_in_readme_exists() -> None:
    from typer.main import get_command

    from optforge.cli import app

    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Command line", 1)[1].split("##", 1)[0]
    names = set(re.findall(r"`optforge ([a-z]+)", table))
    root = get_command(app)
    known = set(getattr(root, "commands", {}))
    assert names and names <= known, sorted(names - known)
