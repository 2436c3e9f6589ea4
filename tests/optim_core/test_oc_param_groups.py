"""Torch-style param groups in ``optim_core.build`` (per-group lr / weight decay over the recipe's
routes), torch lr schedulers on them, and ``add_param_group`` refused at the call."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optim_core


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    torch.manual_seed(1)
    x = torch.randn(5, 6)
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()


def test_groups_override_lr_and_weight_decay_of_the_route() -> None:
    recipe = optim_core.presets.get("sinkgd")  # matrices: sinkhorn at lr x0.05; others: adam
    m = _model()
    first, second = list(m[0].parameters()), list(m[2].parameters())
    opt = optim_core.build(recipe, [{"params": first, "lr": 0.0}, {"params": second}])
    plain = {g["route_name"]: g["lr"] for g in optim_core.build(recipe, m).param_groups}
    assert len(plain) == 2  # two routes, each split by user group
    by_group: dict[int, dict[str, float]] = {}
    for g in opt.param_groups:
        by_group.setdefault(g["param_group"], {})[g["route_name"]] = g["lr"]
    assert by_group[0] == dict.fromkeys(plain, 0.0)  # the user's lr replaces the route's
    assert by_group[1] == plain  # no override: the recipe's route lrs (lr_mult kept)
    before = [p.detach().clone() for p in m.parameters()]
    _step(m, opt)
    after = list(m.parameters())
    assert all(torch.equal(b, a) for b, a in zip(before[:2], after[:2], strict=True))  # lr 0
    assert not any(torch.equal(b, a) for b, a in zip(before[2:], after[2:], strict=True))


def test_group_weight_decay_equals_the_recipe_with_that_decay() -> None:
    decayed = optim_core.presets.get("adamw", lr=0.01, weight_decay=0.3)
    plain = optim_core.presets.get("adamw", lr=0.01, weight_decay=0.0)
    a, b = _model(), _model()
    opt_a = optim_core.build(decayed, a)
    opt_b = optim_core.build(plain, [{"params": list(b.parameters()), "weight_decay": 0.3}])
    assert {g["weight_decay"] for g in opt_b.param_groups} == {0.3}
    for _ in range(3):
        _step(a, opt_a)
        _step(b, opt_b)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_lr_schedulers_scale_each_group_from_its_own_lr() -> None:
    recipe = optim_core.presets.get("sinkgd")
    m = _model()
    groups = [{"params": list(m[0].parameters()), "lr": 0.02},
              {"params": list(m[2].parameters()), "lr": 0.004}]  # fmt: skip
    opt = optim_core.build(recipe, groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    initial = [g["initial_lr"] for g in opt.param_groups]
    for _ in range(2):
        _step(m, opt)
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([x * 0.25 for x in initial])
    assert sorted(set(initial)) == [0.004, 0.02]
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    _step(m, opt)
    cosine.step()
    assert all(g["lr"] < g["initial_lr"] for g in opt.param_groups)
    opt.load_state_dict(opt.state_dict())  # the split groups round-trip


def test_named_pairs_in_groups_keep_routing_by_name() -> None:
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    opt = optim_core.build(
        optim_core.presets.get("sinkgd"),
        [{"params": [("embed.weight", emb.weight)], "lr": 1e-3},
         {"params": [("lm_head.weight", head.weight)]}],
    )  # fmt: skip
    groups = sorted((g["param_group"], g["route_name"], g["lr"]) for g in opt.param_groups)
    assert [(k, lr) for k, _, lr in groups] == [(0, 1e-3), (1, 0.02)]
    assert all("embedding" in route and "head" in route for _, route, _ in groups)  # by name


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([{"params": [], "betas": (0.9, 0.99)}], "unsupported key(s) ['betas']"),
        ([{"lr": 0.1}], "param group 0 has no 'params'"),
        ([{"params": [nn.Parameter(torch.ones(2))], "lr": -1.0}], "lr must be >= 0"),
        ([{"params": [nn.Parameter(torch.ones(2))], "lr": float("nan")}], "finite number"),
    ],
)
def test_bad_groups_are_refused_at_build(groups: list[dict], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):  # fmt: skip
        optim_core.build(optim_core.presets.get("adamw"), groups)


def test_shared_parameter_in_two_groups_is_refused() -> None:
    p = nn.Parameter(torch.ones(3, 3))
    with pytest.raises(ValueError, match="more than one param group"):
        optim_core.build(optim_core.presets.get("adamw"), [{"params": [p]}, {"params": [p]}])


def test_add_param_group_is_refused_at_the_call() -> None:
    m = _model()
    opt = optim_core.build(optim_core.presets.get("adamw"), m[0])
    with pytest.raises(ValueError, match="add_param_group: parameters added after build"):
        opt.add_param_group({"params": list(m[2].parameters()), "lr": 1e-3})
    _step(m, opt)  # the optimizer is untouched and still steps
