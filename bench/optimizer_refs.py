"""The reference optimizers ``bench/optimizer_step.py`` times each preset against: torch's own,
galore-torch, apollo-torch, lion-pytorch, bitsandbytes and torchao, with the presets' defaults."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from optim_core.compile import label_of

Params = dict[str, torch.nn.Parameter]
RefFactory = Callable[[Params], list[torch.optim.Optimizer]]


def _split(params: Params) -> tuple[list, list]:
    matrices = [p for n, p in params.items() if label_of(n, tuple(p.shape)) == "matrix"]
    others = [p for n, p in params.items() if label_of(n, tuple(p.shape)) != "matrix"]
    return matrices, others


def _rank(p: torch.Tensor, fraction: float = 0.25) -> int:
    return max(1, round(fraction * min(p.shape)))


def _galore(ps: Params) -> list[torch.optim.Optimizer]:
    from galore_torch import GaLoreAdamW

    mats, others = _split(ps)
    groups: list[dict[str, Any]] = [
        {
            "params": [p],
            "rank": _rank(p),
            "update_proj_gap": 200,
            "scale": 0.25,
            "proj_type": "std",
        }
        for p in mats
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [GaLoreAdamW([*groups, {"params": others}], lr=0.01)]


def _apollo(mini: bool) -> RefFactory:
    def make(ps: Params) -> list[torch.optim.Optimizer]:
        from apollo_torch import APOLLOAdamW

        mats, others = _split(ps)
        groups: list[dict[str, Any]] = [
            {
                "params": [p],
                "rank": 1 if mini else _rank(p),
                "proj": "random",
                "scale_type": "tensor" if mini else "channel",
                "scale": 128.0 if mini else 1.0,
                "update_proj_gap": 200,
                "proj_type": "std",
            }
            for p in mats
        ]
        opt = APOLLOAdamW([*groups, {"params": others}], lr=0.01, eps=1e-6, scale_front=mini)
        return [opt]

    return make


def _muon(ps: Params) -> list[torch.optim.Optimizer]:
    mats, others = _split(ps)
    muon = torch.optim.Muon(mats, lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True)
    adam = torch.optim.AdamW(
        others, lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0, foreach=True
    )
    return [muon, adam]


def _lion(ps: Params) -> list[torch.optim.Optimizer]:
    from lion_pytorch import Lion

    return [Lion(list(ps.values()), lr=1e-4)]


def _bnb8(ps: Params) -> list[torch.optim.Optimizer]:
    import bitsandbytes as bnb

    return [bnb.optim.AdamW8bit(list(ps.values()), lr=1e-3, weight_decay=0.0)]


def _torchao(cls_name: str) -> RefFactory:
    def make(ps: Params) -> list[torch.optim.Optimizer]:
        import torchao.optim

        cls = getattr(torchao.optim, cls_name)
        return [cls(list(ps.values()), lr=1e-3, weight_decay=0.0)]

    return make


def references(with_torchao: bool) -> dict[str, list[tuple[str, RefFactory]]]:
    """Preset name -> [(reference label, factory)], hyperparameters as the preset defaults."""
    refs: dict[str, list[tuple[str, RefFactory]]] = {
        "adamw": [
            (
                "torch AdamW foreach",
                lambda ps: [
                    torch.optim.AdamW(list(ps.values()), lr=1e-3, weight_decay=0.0, foreach=True)
                ],
            )
        ],
        "sgd": [
            (
                "torch SGD foreach",
                lambda ps: [
                    torch.optim.SGD(list(ps.values()), lr=1e-2, momentum=0.9, foreach=True)
                ],
            )
        ],
        "lion": [("lion-pytorch Lion", _lion)],
        "muon": [("torch Muon + AdamW", _muon)],
        "adafactor": [
            ("torch Adafactor", lambda ps: [torch.optim.Adafactor(list(ps.values()), lr=1e-2)])
        ],
        "galore": [("galore-torch GaLoreAdamW", _galore)],
        "apollo": [("apollo-torch APOLLOAdamW", _apollo(mini=False))],
        "apollo_mini": [("apollo-torch APOLLOAdamW (mini)", _apollo(mini=True))],
        "adamw_8bit": [("bitsandbytes AdamW8bit", _bnb8)],
    }
    refs["q_galore"] = [("galore-torch GaLoreAdamW", _galore)]
    refs["cosmos"] = [("torch Muon + AdamW", _muon)]
    if with_torchao:
        refs["adamw_8bit"].append(("torchao AdamW8bit (compiled)", _torchao("AdamW8bit")))
        refs["adamw_4bit"] = [("torchao AdamW4bit (compiled)", _torchao("AdamW4bit"))]
    return refs
