"""The pages' recipe description (``optim_core.describe``, torch-free) and formatting helpers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from api.web.render import describe_recipe, fmt_bytes, fmt_num, python_snippet

ROOT = Path(__file__).resolve().parents[2]


def test_describe_design_axes_in_words() -> None:
    canon = {
        "schema": 1, "lr": 0.02, "weight_decay": 0.1,
        "design": {
            "norms": ["row", "col"],
            "momentum": {"beta": 0.95, "placement": "matrices", "position": "after_norm",
                         "nesterov": True},
            "rank": 0.25,
            "projection": {"basis": "gaussian", "refresh": 50, "scale": 1.0, "complement": "sign"},
            "state_bits": 8,
            "other": "adamw",
        },
    }  # fmt: skip
    assert describe_recipe(canon) == [
        "lr 0.02, weight decay 0.1",
        "norms: row-wise RMS normalization, then column-wise RMS normalization",
        "momentum: beta 0.95 on matrices, after_norm, Nesterov",
        "rank: 0.25 (gaussian basis, refresh every 50 steps)",
        "state bits: 8",
        "embeddings/head/vectors: adamw",
    ]


def test_describe_pipeline_form_and_unknown() -> None:
    canon = {
        "schema": 1, "lr": 0.01, "weight_decay": 0.0,
        "pipeline": {"routes": [
            {"labels": ["matrix"], "names": [], "lr_mult": 0.5, "stages": [
                {"type": "lowrank", "rank": 4, "basis": "svd", "refresh": 10,
                 "inner": [{"type": "adam", "state_bits": 8}]}]},
            {"labels": [], "names": [], "lr_mult": 1.0, "stages": []},
        ]},
    }  # fmt: skip
    assert describe_recipe(canon)[1:] == [
        "matrix: lowrank(rank 4, svd, refresh 10: adam [8-bit state]) (lr x0.5)",
        "all other: plain gradient",
    ]
    assert describe_recipe({"lr": 0.1, "odd": [1]}) == ["lr: 0.1", "odd: [1]"]  # not a recipe
    assert describe_recipe(None) == ["(no recipe stored)"]


def test_snippet_round_trips_the_recipe() -> None:
    canon = {"schema": 1, "lr": 0.1, "design": {"rank": None, "norms": ["sign"]}, "x": [{"a": 1}]}
    code = python_snippet(canon)
    tree = ast.parse(code)
    assert ast.literal_eval(tree.body[1].value.args[0]) == canon  # type: ignore[attr-defined]
    assert "optim_core.build(recipe, model)" in code


def test_formatting() -> None:
    assert fmt_num(None) == "—" and fmt_num(float("nan")) == "—"
    assert fmt_num(3.14159) == "3.142" and fmt_num(12345) == "12,345"
    assert fmt_num(1010.4, 3) == "1,010" and fmt_num(0.000123) == "0.000123"
    assert fmt_bytes(512) == "512 B" and fmt_bytes(3 * 1024 * 1024) == "3.0 MiB"


def test_pages_import_and_describe_without_torch() -> None:
    code = (
        "import sys, api.web, api.web.views, records.leaderboard, search.study_view; "
        "from api.web.render import describe_recipe; "
        "lines = describe_recipe({'lr': 0.1, 'design': {'norms': ['sign']}}); "
        "assert lines[1] == 'norms: sign', lines; "
        "bad = [m for m in ('torch', 'workers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
