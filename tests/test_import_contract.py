"""The import contract (.importlinter, run by `make lint`) holds, and it is enforced: the same
check fails on a copy of the tree with one forbidden import added."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("optim_core", "core", "records", "search", "workers", "api", "optforge", "migrations")
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--config", str(cwd / ".importlinter"), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def _copy(tmp: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp / pkg, ignore=shutil.ignore_patterns("*.pyc", "static"))
    shutil.copy(ROOT / ".importlinter", tmp / ".importlinter")
    return tmp


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is a dev dependency")
def test_contract_holds_and_a_forbidden_import_breaks_it(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    ok = _lint(tree)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 broken" in ok.stdout
    (tree / "api" / "routes" / "sneaky.py").write_text(
        "import workers.train  # forbidden\n"
        "import optim_core.optimizer  # forbidden: needs torch\n"
        "import optim_core.describe  # allowed: torch-free data\n"
    )
    (tree / "optim_core" / "sneaky.py").write_text("import sqlalchemy  # forbidden\n")
    broken = _lint(tree)
    assert broken.returncode == 1, broken.stdout
    assert "2 broken" in broken.stdout
    assert "api.routes.sneaky -> workers.train" in broken.stdout
    assert "api.routes.sneaky -> optim_core.optimizer" in broken.stdout
    assert "-> optim_core.describe" not in broken.stdout
    assert "optim_core.sneaky -> sqlalchemy" in broken.stdout
