"""The torch-free describer and formatting helpers of the web pages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from web_seed import PRESETS, canonical

from api.web.describe import describe_canonical
from api.web.render import fmt_bytes, fmt_num, python_snippet

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
    assert describe_canonical(canon) == [
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
    assert describe_canonical(canon)[1:] == [
        "matrix: lowrank(rank 4, svd, refresh 10: adam [8-bit state]) (lr x0.5)",
        "all other: plain gradient",
    ]
    assert describe_canonical({"lr": 0.1, "odd": [1]}) == ["lr 0.1, weight decay 0", "odd: [1]"]
    assert describe_canonical(None) == ["(no recipe stored)"]


def test_describer_matches_optim_core_on_presets_and_seed_designs() -> None:
    """The page's words equal ``optim_core.describe`` (minus its name prefix) for every preset."""
    optim_core = pytest.importorskip("optim_core")
    recipes = [optim_core.presets.get(n) for n in optim_core.presets.names()]
    recipes += [
        optim_core.Recipe.model_validate(canonical(norms, bits, rank, 0.01, None))
        for _, norms, bits, rank, _, _ in PRESETS
    ]
    for recipe in recipes:
        want = optim_core.describe(recipe).splitlines()
        want[0] = want[0].split(": ", 1)[-1] if recipe.name else want[0]
        assert describe_canonical(recipe.canonical()) == want, recipe.name


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


def test_pages_import_without_torch() -> None:
    code = (
        "import sys, api.web, api.web.views, search.leaderboard, search.study_view; "
        "bad = [m for m in ('torch', 'optim_core', 'workers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
