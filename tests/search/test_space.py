"""Design space: schema, define-by-run suggestion, round-trips, validation, determinism."""

from __future__ import annotations

import optuna
import pytest

from search.space import DesignSpace, SpaceError, default_space, load_space
from search.suggest import params_to_design, suggest_params


def _sample(space: DesignSpace, n: int, seed: int) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(suggest_params(trial, space))
        study.tell(trial, 1.0)
    return out


def test_default_space_loads_and_covers_seed_designs() -> None:
    space = default_space()
    seqs = {tuple(s) for s in space.norms.sequences or []}
    assert {("adam",), ("sign",), ("row", "col"), ("sinkhorn",), ("ns",)} <= seqs
    assert None in space.rank.values and any(v is not None for v in space.rank.values)
    assert 8 in space.state_bits


def test_round_trip_params_design_and_optuna_distributions() -> None:
    space = default_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(40):
        trial = study.ask()
        params = suggest_params(trial, space)
        design = params_to_design(params, space)
        # every Optuna parameter is in our params with the same value
        for key, value in trial.params.items():
            assert params[key] == value
        # Optuna's recorded params alone give back the same recipe
        assert params_to_design(dict(trial.params), space) == design
        assert design["lr"] == pytest.approx(params["lr"])
        assert 1e-4 <= design["lr"] <= 3e-2
        study.tell(trial, 1.0)


def test_conditional_params_only_when_parent_active() -> None:
    seen_momentum = seen_plain = seen_rank = seen_norank = False
    for params in _sample(default_space(), 60, seed=1):
        design = params_to_design(params, default_space())
        if params["momentum"] == "none":
            seen_plain = True
            assert "beta" not in params and "momentum_position" not in params
            assert set(design["design"]["momentum"]) == {"placement"}
        else:
            seen_momentum = True
            assert 0.8 <= params["beta"] <= 0.98
        if params["rank"] == "none":
            seen_norank = True
            assert "basis" not in params and "refresh" not in params
            assert "projection" not in design["design"]
        else:
            seen_rank = True
            assert params["basis"] in ("svd", "gaussian")
            assert design["design"]["projection"]["refresh"] in (50, 200)
        stateful = (
            params["momentum"] != "none" or params["norms"] == "adam" or params["rank"] != "none"
        )
        assert ("state_bits" in params) == stateful
    assert seen_momentum and seen_plain and seen_rank and seen_norank


def test_blocks_form_suggests_sequences_up_to_max_length() -> None:
    space = load_space(
        {"norms": {"blocks": ["row", "col", "sign"], "max_length": 3}, "lr": [0.01]}
    )
    lengths = set()
    for params in _sample(space, 30, seed=0):
        norms = params_to_design(params, space)["design"]["norms"]
        lengths.add(len(norms))
        assert all(b in ("row", "col", "sign") for b in norms)
        assert not any(f"norm_{i}" in params for i in range(len(norms), 3))
    assert lengths == {1, 2, 3}


def test_same_seed_same_sequence() -> None:
    assert _sample(default_space(), 12, seed=7) == _sample(default_space(), 12, seed=7)
    assert _sample(default_space(), 12, seed=7) != _sample(default_space(), 12, seed=8)


def test_yaml_and_json_text(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("norms: {sequences: [[row, col]]}\nlr: {low: 0.001, high: 0.1, log: true}\n")
    space = load_space(path)
    assert space.norms.sequences == [["row", "col"]]
    assert load_space('{"norms": {"sequences": [["sign"]]}, "lr": [0.1]}').lr == [0.1]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"norms": {"sequences": [["row", "adam"]]}, "lr": [0.1]}, "stands alone"),
        ({"norms": {"sequences": [["bogus"]]}, "lr": [0.1]}, "unknown value"),
        ({"norms": {"sequences": [["row"]], "blocks": ["row"]}, "lr": [0.1]}, "exactly one"),
        ({"norms": {"sequences": [["row"]]}, "lr": {"low": 0.0, "high": 1, "log": True}}, "log"),
        ({"norms": {"sequences": [["row"]]}, "lr": [0.1], "rank": {"values": [1.5]}}, "(0, 1)"),
        (
            {
                "norms": {"sequences": [["row"]]},
                "lr": [0.1],
                "state_bits": [8],
                "momentum": {"placement": ["none"]},
            },
            "meaningless",
        ),
        ({"norms": {"sequences": [["row"]]}, "lr": [0.1], "typo": 1}, "Extra inputs"),
        ({"norms": {"sequences": [["row"]]}, "lr": [0.1], "fixed": {"rank": 4}}, "fixed parts"),
        (
            {
                "norms": {"sequences": [["row"]]},
                "lr": [0.1],
                "momentum": {"placement": ["matrices"], "beta": [1.2]},
            },
            "beta",
        ),
    ],
)
def test_invalid_space_rejected_with_clear_error(spec: dict, message: str) -> None:
    with pytest.raises(SpaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_space(spec)


def test_huge_space_rejected_quickly() -> None:
    """Repeated choices multiply: 1000^3 corners are refused at the cap, not validated."""
    import time

    from search.space import MAX_CORNERS

    spec = {
        "norms": {"sequences": [["row"] * n for n in range(1, 1001)]},
        "momentum": {"placement": ["none"] * 1000},
        "rank": {"values": list(range(1, 1001))},
        "lr": [0.1],
    }
    start = time.perf_counter()
    with pytest.raises(SpaceError, match=f"more than {MAX_CORNERS} combinations"):
        load_space(spec)
    assert time.perf_counter() - start < 5


def _llama_params() -> dict:
    import torch

    from core.workloads import get_workload, named_shapes

    gen = torch.Generator().manual_seed(0)
    shapes = named_shapes(get_workload("synthetic-lm"))  # LLaMA-shaped: embed, attn, mlp, head
    return {n: torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for n, s in shapes.items()}


def _step(opt, params: dict) -> None:  # type: ignore[no-untyped-def]
    import torch

    for p in params.values():
        p.grad = torch.randn_like(p)
    opt.step()
    opt.zero_grad()


def test_every_suggested_recipe_validates_and_builds_on_llama_params() -> None:
    import math

    import optim_core
    from search.suggest import corner_params, params_to_recipe

    params = _llama_params()
    space = default_space()
    sampled = _sample(space, 12, seed=2)
    corners = list(corner_params(space))
    assert len(corners) >= 7 * 2 * 3  # every norm sequence x placement x rank, bits if stateful
    for p in [*sampled, *corners[::11]]:
        recipe = params_to_recipe(p, space)
        assert isinstance(recipe, optim_core.Recipe) and len(recipe.hash()) >= 16
        opt = optim_core.build(recipe, params)
        _step(opt, params)
        assert all(math.isfinite(float(t.detach().abs().sum())) for t in params.values())
        expected = optim_core.state_bytes(recipe, {n: tuple(t.shape) for n, t in params.items()})
        assert optim_core.measure_state_bytes(opt) == expected, p


def test_every_corner_of_the_default_space_validates() -> None:
    from optim_core import Recipe
    from search.suggest import corner_params

    space = default_space()
    hashes = {
        Recipe.model_validate(params_to_design(p, space)).hash() for p in corner_params(space)
    }
    assert len(hashes) > 50


def test_fixed_parts_and_vocabulary_come_from_optim_core() -> None:
    with pytest.raises(SpaceError, match="fixed: unknown key"):
        load_space({"norms": {"sequences": [["row"]]}, "lr": [0.1], "fixed": {"lr_mult": 2}})
    with pytest.raises(SpaceError, match="fixed.other"):
        load_space({"norms": {"sequences": [["row"]]}, "lr": [0.1], "fixed": {"other": "adam"}})
    with pytest.raises(SpaceError, match="momentum.placement"):
        load_space(
            {"norms": {"sequences": [["row"]]}, "lr": [0.1], "momentum": {"placement": ["x"]}}
        )
