"""The contract battery (optim_core.testing) over every registered preset."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

import optim_core
from optim_core import presets, testing
from optim_core.recipe import Recipe

STATELESS_MATRIX_PRESETS = ["sinkgd", "swan", "scale"]
MY_PRESETS = [
    "adamw",
    "sgd",
    "signum",
    "lion",
    "muon",
    "swan",
    "sinkgd",
    "scale",
    "adafactor",
    "adam_mini",
]


@pytest.mark.parametrize("check", testing.CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", presets.names())
def test_preset_contract(name: str, check: Callable[[Recipe], None]) -> None:
    check(presets.get(name))


@pytest.mark.parametrize("name", presets.names())
def test_state_bytes_exact_for_bf16_params(name: str) -> None:
    # state kept in the parameter dtype (e.g. projectors) must be counted in bf16 too
    testing.check_state_bytes_exact(presets.get(name), torch.bfloat16)


def test_registry_keeps_the_seed_presets() -> None:
    assert set(MY_PRESETS) <= set(presets.names())


@pytest.mark.parametrize("name", STATELESS_MATRIX_PRESETS)
def test_stateless_presets_store_nothing_for_matrices(name: str) -> None:
    recipe = presets.get(name)
    assert testing.matrix_state_bytes(recipe) == 0
    matrices = {
        k: v for k, v in testing.LLAMA_SHAPES.items() if k.startswith("layers") and len(v) == 2
    }
    assert optim_core.state_bytes(recipe, matrices) == 0


def test_adamw_state_is_two_floats_per_param() -> None:
    n = sum(math.prod(s) for s in testing.LLAMA_SHAPES.values())
    assert optim_core.state_bytes(presets.get("adamw"), testing.LLAMA_SHAPES) == 8 * n


def test_state_bytes_per_param_of_stateful_presets() -> None:
    shapes = testing.LLAMA_SHAPES
    n = sum(math.prod(s) for s in shapes.values())
    # one momentum float per element
    for name in ("sgd", "signum", "lion"):
        assert optim_core.state_bytes(presets.get(name), shapes) == 4 * n
    # adafactor: m + n floats per matrix, numel per vector
    expected = sum(4 * (s[0] + s[1]) if len(s) == 2 else 4 * s[0] for s in shapes.values())
    assert optim_core.state_bytes(presets.get("adafactor"), shapes) == expected


DESIGNS = [
    {
        "norms": ["row", "col"],
        "momentum": {"beta": 0.9, "placement": "matrices", "nesterov": True},
        "state_bits": 16,
    },
    {
        "norms": ["adam"],
        "rank": 0.25,
        "projection": {"basis": "svd", "refresh": 5, "complement": "sign"},
        "state_bits": 8,
    },
    {
        "norms": ["ns"],
        "momentum": {"beta": 0.9, "placement": "all", "position": "after_norm"},
        "rank": 0.25,
        "projection": {"basis": "gaussian", "refresh": 3},
        "other": "sgd",
    },
    {
        "norms": ["sign"],
        "momentum": {"placement": "embed_and_head"},
        "other": "same",
        "state_bits": 4,
    },
]


@pytest.mark.parametrize("design", DESIGNS, ids=lambda d: "-".join(d["norms"]))
def test_design_recipes_pass_the_battery(design: dict) -> None:
    recipe = Recipe.model_validate({"schema": 1, "lr": 0.01, "design": design})
    for check in testing.CHECKS:
        check(recipe)
