"""The library's own distribution (optim_core/pyproject.toml) holds optim_core and nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_optim_core_wheel_contains_only_the_library(tmp_path: Path) -> None:
    src = tmp_path / "optim_core"  # build from a copy: setuptools writes build/ in the tree
    shutil.copytree(ROOT / "optim_core", src, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(src),
        ],  # fmt: skip
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("optim_core-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"optim_core"}, top
    assert len([t for t in top if t.endswith(".dist-info")]) == 1, top
    assert "optim_core/recipe.py" in names and "optim_core/presets.py" in names
    meta = next(n for n in names if n.endswith("METADATA"))
    requires = [
        line.split(":", 1)[1].strip()
        for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    assert sorted(r.split(">")[0].split("=")[0] for r in requires) == [
        "pydantic",
        "pyyaml",
        "torch",
    ]
