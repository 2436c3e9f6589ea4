"""Recipe schema, canonical form / hash, validation errors, routing and the optimizer API."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError

import optim_core
from optim_core import presets
from optim_core.compile import label_of, resolve_route
from optim_core.recipe import Recipe, Route

DESIGN = {
    "schema": 1,
    "name": "mine",
    "lr": 0.01,
    "weight_decay": 0.1,
    "design": {
        "norms": ["row", "col"],
        "momentum": {"beta": 0.9, "placement": "matrices", "position": "before_norm"},
        "rank": None,
        "state_bits": 32,
        "other": "adamw",
    },
}
SHAPES = {
    "embed.weight": (32, 16),
    "layers.0.attn.q.weight": (16, 16),
    "layers.0.mlp.up.weight": (40, 16),
    "layers.0.attn_norm.weight": (16,),
    "lm_head.weight": (32, 16),
}


def _params() -> dict[str, torch.nn.Parameter]:
    torch.manual_seed(0)
    return {n: torch.nn.Parameter(torch.randn(s)) for n, s in SHAPES.items()}


def test_json_and_yaml_round_trip() -> None:
    r = Recipe.model_validate(DESIGN)
    assert Recipe.model_validate_json(r.to_json()) == r
    assert Recipe.from_yaml(r.to_yaml()) == r
    for name in presets.names():
        p = presets.get(name)
        assert Recipe.from_yaml(p.to_yaml()) == p
        assert Recipe.model_validate(p.canonical()).hash() == p.hash()


def test_canonical_fills_defaults_and_hash_ignores_name() -> None:
    short = Recipe.model_validate(
        {"lr": 0.01, "weight_decay": 0.1, "design": {"norms": ["row", "col"], "momentum": {}}}
    )
    full = Recipe.model_validate(DESIGN)
    assert short.canonical() == full.canonical()
    assert short.hash() == full.hash()
    assert "name" not in full.canonical()
    assert full.canonical()["design"]["momentum"]["placement"] == "matrices"
    assert len(full.hash()) >= 16
    changed = Recipe.model_validate({**DESIGN, "lr": 0.02})
    assert changed.hash() != full.hash()


def test_design_and_its_compiled_pipeline_share_the_hash() -> None:
    design = Recipe.model_validate(DESIGN)
    pipe = Recipe.model_validate(
        {"lr": 0.01, "weight_decay": 0.1, "pipeline": design.to_pipeline().model_dump()}
    )
    assert pipe.hash() == design.hash()
    assert pipe.canonical() != design.canonical()


def test_unknown_norm_names_field_and_options() -> None:
    with pytest.raises(ValidationError) as err:
        Recipe.model_validate({"design": {"norms": ["row", "spectral"]}})
    text = str(err.value)
    assert "design.norms.1" in text and "'sinkhorn'" in text and "'row'" in text


def test_low_bits_on_stateless_design_rejected() -> None:
    with pytest.raises(ValidationError, match="state_bits"):
        Recipe.model_validate({"design": {"norms": ["row"], "state_bits": 4}})
    ok = Recipe.model_validate({"design": {"norms": ["adam"], "state_bits": 16}})
    assert ok.design is not None and ok.design.state_bits == 16


def test_state_bits_on_stateless_stage_rejected() -> None:
    bad = {"pipeline": {"routes": [{"stages": [{"type": "row", "state_bits": 4}]}]}}
    with pytest.raises(ValidationError) as err:
        Recipe.model_validate(bad)
    assert "state_bits" in str(err.value) and "stages.0" in str(err.value)


def test_unknown_stage_type_lists_options() -> None:
    with pytest.raises(ValidationError) as err:
        Recipe.model_validate({"pipeline": {"routes": [{"stages": [{"type": "magic"}]}]}})
    assert "'adam'" in str(err.value) and "'sinkhorn'" in str(err.value)


def test_extra_fields_and_form_choice_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Recipe.model_validate({"design": {"norms": []}, "color": "red"})
    with pytest.raises(ValidationError, match="exactly one"):
        Recipe.model_validate({"lr": 0.1})
    with pytest.raises(ValidationError, match="schema"):
        Recipe.model_validate({"schema": 2, "design": {}})
    with pytest.raises(ValidationError, match="rank"):
        Recipe.model_validate({"design": {"norms": ["adam"], "rank": 1.5}})


def test_rank_larger_than_matrix_named_at_build_time() -> None:
    r = Recipe.model_validate({"design": {"norms": ["adam"], "rank": 20}})
    with pytest.raises(ValueError, match=r"rank.*'layers\.0\.attn\.q\.weight'"):
        optim_core.state_bytes(r, SHAPES)
    with pytest.raises(ValueError, match="layers.0.attn.q.weight"):
        optim_core.build(r, _params())


def test_matrix_stage_on_vector_named() -> None:
    r = Recipe.model_validate({"pipeline": {"routes": [{"stages": [{"type": "row"}]}]}})
    with pytest.raises(ValueError, match="layers.0.attn_norm.weight"):
        optim_core.build(r, _params())


def test_unknown_preset_and_override() -> None:
    with pytest.raises(ValueError, match="adamw"):
        presets.get("nope")
    with pytest.raises(ValueError, match="beta1"):
        presets.get("adamw", betta=0.5)
    assert presets.get("sinkgd", lr=0.02).lr == 0.02


def test_labels_and_routing_order() -> None:
    assert label_of("embed.weight", (4, 4)) == "embedding"
    assert label_of("lm_head.weight", (4, 4)) == "head"
    assert label_of("layers.0.mlp.down.weight", (4, 4)) == "matrix"
    assert label_of("layers.0.attn_norm.weight", (4,)) == "vector"
    pipe = Recipe.model_validate(
        {
            "pipeline": {
                "routes": [
                    {"labels": ["matrix"], "stages": [{"type": "sign"}]},
                    {"names": ["*.mlp.*"], "stages": [{"type": "adam"}]},
                    {"stages": []},
                ]
            }
        }
    ).to_pipeline()
    assert resolve_route(pipe, "layers.0.mlp.up.weight", (4, 4)) == 1  # names beat labels
    assert resolve_route(pipe, "layers.0.attn.q.weight", (4, 4)) == 0
    assert resolve_route(pipe, "norm.weight", (4,)) == 2  # catch-all
    only = Recipe.model_validate({"pipeline": {"routes": [{"labels": ["matrix"]}]}})
    with pytest.raises(ValueError, match="norm.weight"):
        resolve_route(only.to_pipeline(), "norm.weight", (4,))


def test_param_groups_lr_override_and_lambda_lr() -> None:
    recipe = presets.get("muon", lr=0.02, adam_lr=0.002)
    opt = optim_core.build(recipe, _params(), lr=0.04)
    lrs = {g["route_name"]: g["lr"] for g in opt.param_groups}
    assert lrs["matrix"] == 0.04
    assert lrs["embedding+head+vector"] == 0.002  # absolute: the override leaves it alone
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    assert sorted(g["initial_lr"] for g in opt.param_groups) == pytest.approx([0.002, 0.04])
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    opt.step()
    sched.step()
    for g in opt.param_groups:  # the schedule scales absolute routes too
        assert g["lr"] == pytest.approx(0.5 * g["initial_lr"])


def test_route_lr_is_relative_or_absolute() -> None:
    """Failed before: muon's aux AdamW and SCALE's vector Adam moved with every lr sweep."""
    for name, route_name, fixed in (
        ("muon", "embedding+head+vector", 3e-4),
        ("scale", "vector", 0.02),
    ):
        for lr in (1e-3, 0.1):
            opt = optim_core.build(presets.get(name).with_lr(lr), _params(), lr=lr * 2)
            lrs = {g["route_name"]: g["lr"] for g in opt.param_groups}
            assert lrs[route_name] == fixed
            assert lrs["matrix"] == pytest.approx(lr * 2)
    with pytest.raises(ValidationError, match="either 'lr'"):
        Route(labels=["vector"], lr=0.1, lr_mult=2.0)
    # routes without an absolute lr keep their canonical form (and hence their hash)
    relative = presets.get("sinkgd").canonical()
    assert all("lr" not in r for r in relative["pipeline"]["routes"])
    absolute = presets.get("muon").canonical()["pipeline"]["routes"][1]
    assert absolute["lr"] == 3e-4 and Recipe.model_validate(presets.get("muon").canonical())


def test_foreach_path_equals_per_param_path_and_shares_state() -> None:
    recipe = presets.get("adamw", lr=1e-2, weight_decay=0.1)
    a, b = _params(), _params()
    opt_a = optim_core.build(recipe, a)
    opt_b = optim_core.build(recipe, b, foreach=False)
    for step in range(5):
        torch.manual_seed(10 + step)
        grads = {n: torch.randn(s) for n, s in SHAPES.items()}
        for n in SHAPES:
            a[n].grad, b[n].grad = grads[n].clone(), grads[n].clone()
        opt_a.step()
        opt_b.step()
    for n in SHAPES:
        torch.testing.assert_close(a[n], b[n], rtol=1e-6, atol=1e-7)
    assert set(opt_a.state_dict()["state"][0]) == set(opt_b.state_dict()["state"][0])


def test_state_dtype_follows_bf16_params_unless_state_bits_32() -> None:
    """Failed before: state was fp32 whatever the parameter dtype (torch.optim keeps bf16)."""
    explicit = Recipe.model_validate(
        {"pipeline": {"routes": [{"stages": [{"type": "adam", "state_bits": 32}]}]}}
    )
    for recipe, dtype in ((presets.get("adamw"), torch.bfloat16), (explicit, torch.float32)):
        params = {n: torch.nn.Parameter(p.detach().bfloat16()) for n, p in _params().items()}
        opt = optim_core.build(recipe, params)
        for p in params.values():
            p.grad = torch.ones_like(p)
        opt.step()
        fresh = optim_core.build(recipe, params)
        fresh.load_state_dict(copy.deepcopy(opt.state_dict()))
        assert fresh.state[params["embed.weight"]]["0.adam.m"].dtype == dtype
        shapes = {n: tuple(p.shape) for n, p in params.items()}
        measured = optim_core.measure_state_bytes(opt)
        assert optim_core.state_bytes(recipe, shapes, torch.bfloat16) == measured


def test_describe_names_the_axes() -> None:
    text = optim_core.describe(Recipe.model_validate(DESIGN))
    assert "row-wise" in text and "momentum: beta 0.9 on matrices" in text
    assert "state bits: 32" in text
    assert "matrix: ema -> ns -> shape_scale" in optim_core.describe(presets.get("muon"))


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_describes_each_route(name: str) -> None:
    recipe = presets.get(name)
    text = optim_core.describe(recipe)
    assert text.startswith(f"{name}: lr ")
    assert len(text.splitlines()) == 1 + len(recipe.to_pipeline().routes)


@pytest.mark.parametrize("name", ["adamw", "galore", "adamw_8bit"])
def test_loading_a_live_state_dict_does_not_share_step_counters(name: str) -> None:
    """Two optimizers continued from one live state_dict stay identical (no shared tensors)."""
    recipe = presets.get(name, lr=1e-2)
    a, b = _params(), _params()
    opt_a = optim_core.build(recipe, a)
    for step in range(3):
        torch.manual_seed(step)
        for p in a.values():
            p.grad = torch.randn_like(p)
        opt_a.step()
    with torch.no_grad():
        for n in SHAPES:
            b[n].copy_(a[n])
    opt_b = optim_core.build(recipe, b)
    opt_b.load_state_dict(opt_a.state_dict())  # live, not deep-copied
    for step in range(3, 6):
        torch.manual_seed(step)
        grads = {n: torch.randn(s) for n, s in SHAPES.items()}
        for n in SHAPES:
            a[n].grad, b[n].grad = grads[n].clone(), grads[n].clone()
        opt_a.step()
        opt_b.step()
    for n in SHAPES:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=0)
