"""Contract battery every preset (and any recipe) must pass — optuna ``StorageTestCase`` style.

Use from a test file parametrized over ``optim_core.presets.names()``::

    @pytest.mark.parametrize("name", presets.names())
    @pytest.mark.parametrize("check", CHECKS)
    def test_contract(name, check): check(presets.get(name))

Each check raises ``AssertionError`` with a message naming the recipe. Problems are tiny (a
LLaMA-named two-layer model with d=16) so the whole battery runs in seconds on a CPU.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from optim_core.accounting import measure_state_bytes, state_bytes
from optim_core.compile import label_of
from optim_core.optimizer import RecipeOptimizer
from optim_core.recipe import Recipe

__all__ = [
    "CHECKS",
    "LLAMA_FACTS",
    "LLAMA_SHAPES",
    "TinyLM",
    "check_bf16_params",
    "check_dtype_kept",
    "check_loss_falls",
    "check_state_bytes_exact",
    "check_state_dict_round_trip",
    "check_zero_grads_finite",
    "llama_shapes",
    "matrix_state_bytes",
]


def llama_shapes(
    vocab: int = 128, d: int = 64, inter: int = 128, layers: int = 1
) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of our LLaMA model (docs/architecture.md names), untied head."""
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (vocab, d)}
    for i in range(layers):
        for proj in ("q", "k", "v", "o"):
            shapes[f"layers.{i}.attn.{proj}.weight"] = (d, d)
        shapes[f"layers.{i}.mlp.gate.weight"] = (inter, d)
        shapes[f"layers.{i}.mlp.up.weight"] = (inter, d)
        shapes[f"layers.{i}.mlp.down.weight"] = (d, inter)
        shapes[f"layers.{i}.attn_norm.weight"] = (d,)
        shapes[f"layers.{i}.mlp_norm.weight"] = (d,)
    shapes["norm.weight"] = (d,)
    shapes["lm_head.weight"] = (vocab, d)
    return shapes


LLAMA_SHAPES = llama_shapes()
LLAMA_FACTS = {"n_heads": 4, "n_kv_heads": 4}  # model facts of LLAMA_SHAPES (head dim 16)


class TinyLM(nn.Module):
    """Embedding -> RMS-gain -> gated MLP (residual) -> gain -> head; LLaMA parameter names."""

    def __init__(self, vocab: int = 32, d: int = 16, inter: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([_Block(d, inter)])
        self.norm = nn.Parameter(torch.ones(d))
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embed(tokens)
        for block in self.layers:
            h = block(h)
        return self.lm_head(h * self.norm)


class _Block(nn.Module):
    def __init__(self, d: int, inter: int) -> None:
        super().__init__()
        self.attn_norm = nn.Parameter(torch.ones(d))
        self.mlp = nn.ModuleDict(
            {
                "gate": nn.Linear(d, inter, bias=False),
                "up": nn.Linear(d, inter, bias=False),
                "down": nn.Linear(inter, d, bias=False),
            }
        )

    def forward(self, h: Tensor) -> Tensor:
        x = h * self.attn_norm
        mlp = self.mlp
        return h + mlp["down"](torch.nn.functional.silu(mlp["gate"](x)) * mlp["up"](x))


def _model(seed: int = 0, dtype: torch.dtype = torch.float32) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM().to(dtype)


def _batch(vocab: int = 32) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(123)
    tokens = torch.arange(vocab).repeat(2)
    targets = torch.randperm(vocab, generator=gen)[tokens]
    return tokens, targets


def _loss(model: TinyLM) -> Tensor:
    tokens, targets = _batch()
    return nn.functional.cross_entropy(model(tokens).float(), targets)


def _train(model: TinyLM, opt: torch.optim.Optimizer, steps: int) -> float:
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = _loss(model)
        loss.backward()
        opt.step()
    return float(_loss(model).detach()) if steps else float(loss)


def check_dtype_kept(recipe: Recipe) -> None:
    """After steps, every parameter keeps its dtype and shape and stays finite."""
    model = _model()
    before = {n: (p.dtype, p.shape) for n, p in model.named_parameters()}
    _train(model, RecipeOptimizer(recipe, model), 3)
    for n, p in model.named_parameters():
        assert (p.dtype, p.shape) == before[n], f"{recipe.name}: {n} changed dtype/shape"
        assert torch.isfinite(p).all(), f"{recipe.name}: {n} is not finite"


def check_bf16_params(recipe: Recipe) -> None:
    """bf16 parameters train (stay bf16, finite, and move)."""
    model = _model(dtype=torch.bfloat16)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train(model, RecipeOptimizer(recipe, model), 3)
    moved = False
    for n, p in model.named_parameters():
        assert p.dtype == torch.bfloat16, f"{recipe.name}: {n} is {p.dtype}, not bf16"
        assert torch.isfinite(p.float()).all(), f"{recipe.name}: {n} not finite in bf16"
        moved = moved or not torch.equal(p.detach(), start[n])
    assert moved, f"{recipe.name}: no bf16 parameter changed"


def check_state_dict_round_trip(recipe: Recipe, k: int = 3, more: int = 3) -> None:
    """Train k steps, save, load into a fresh optimizer on a copy, continue: equals an
    uninterrupted run bit for bit."""
    model = _model()
    opt = RecipeOptimizer(recipe, model)
    _train(model, opt, k)
    saved_opt = copy.deepcopy(opt.state_dict())
    twin = copy.deepcopy(model)
    _train(model, opt, more)
    fresh = RecipeOptimizer(recipe, twin)
    fresh.load_state_dict(saved_opt)
    _train(twin, fresh, more)
    for (n, a), (_, b) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        assert torch.equal(a, b), f"{recipe.name}: {n} differs after state_dict round trip"


def check_loss_falls(recipe: Recipe, steps: int = 30, factor: float = 1.5) -> None:
    """Cross-entropy on a memorization task falls by ``factor`` within ``steps`` at 10× the
    recipe lr, or at 1×, 100×, 0.1× it (presets carry LLM-scale lrs; the task is tiny and
    most presets need 10× to move it in 30 steps)."""
    results = {}
    for mult in (10.0, 1.0, 100.0, 0.1):
        model = _model()
        first = float(_loss(model).detach())
        last = _train(model, RecipeOptimizer(recipe, model, lr=recipe.lr * mult), steps)
        results[mult] = (first, last)
        if math.isfinite(last) and last * factor <= first:
            return
    raise AssertionError(f"{recipe.name}: loss did not fall {factor}x: {results}")


def check_zero_grads_finite(recipe: Recipe) -> None:
    """All-zero gradients for several steps leave parameters finite (no 0/0)."""
    model = _model()
    opt = RecipeOptimizer(recipe, model)
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
    for n, p in model.named_parameters():
        assert torch.isfinite(p).all(), f"{recipe.name}: {n} not finite after zero grads"


def _fake_params(shapes: dict[str, tuple[int, ...]], dtype: torch.dtype) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(0)
    out: dict[str, Tensor] = {}
    for name, shape in shapes.items():
        p = nn.Parameter(torch.randn(shape, generator=gen).to(dtype))
        p.grad = torch.randn(shape, generator=gen).to(dtype)
        out[name] = p
    return out


def check_state_bytes_exact(recipe: Recipe, dtype: torch.dtype = torch.float32) -> None:
    """Analytical ``state_bytes`` on LLaMA shapes equals the measured bytes after two steps."""
    params = _fake_params(LLAMA_SHAPES, dtype)
    opt = RecipeOptimizer(recipe, params, model_facts=LLAMA_FACTS)
    opt.step()
    opt.step()
    measured = measure_state_bytes(opt)
    expected = state_bytes(recipe, LLAMA_SHAPES, dtype, model_facts=LLAMA_FACTS)
    assert measured == expected, f"{recipe.name}: measured {measured} != analytical {expected}"


def matrix_state_bytes(recipe: Recipe) -> int:
    """Measured state bytes of the hidden-matrix parameters of LLaMA shapes after one step."""
    params = _fake_params(LLAMA_SHAPES, torch.float32)
    opt = RecipeOptimizer(recipe, params, model_facts=LLAMA_FACTS)
    opt.step()
    total = 0
    for name, p in params.items():
        if label_of(name, tuple(p.shape)) == "matrix":
            for key, t in opt.state[p].items():
                if key != "step":
                    total += t.numel() * t.element_size()
    return total


CHECKS: list[Callable[[Recipe], None]] = [
    check_dtype_kept,
    check_bf16_params,
    check_state_dict_round_trip,
    check_loss_falls,
    check_zero_grads_finite,
    check_state_bytes_exact,
]
