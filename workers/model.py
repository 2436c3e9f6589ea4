"""Models of the workloads: a LLaMA-style decoder and a small MLP classifier.

The decoder follows the LLaMA/GaLore reference (docs/references.md#galore-protocol): pre-norm blocks with
RMSNorm, rotary position embeddings, SwiGLU feed-forward, no biases, untied ``embed`` and
``lm_head``. Module names make routing obvious: ``embed``, ``layers.{i}.attn.{q,k,v,o}``,
``layers.{i}.mlp.{gate,up,down}``, ``layers.{i}.attn_norm``, ``layers.{i}.mlp_norm``, ``norm``,
``lm_head`` (docs/architecture.md, "Parameter names of our models"). Parameter shapes equal
``core.workloads.named_shapes`` for the same model dict.

Build big configs on the meta device (``with torch.device("meta"): build_model(...)``) to check
shapes without allocating.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LlamaConfig", "LlamaModel", "MLPClassifier", "build_model", "init_weights"]


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 256
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ffn_dim: int = 344
    max_seq_len: int = 128
    norm_eps: float = 1e-6
    rope_theta: float = 10_000.0


# --------------------------------------------------------------------------------------------
# pure tensor functions
# --------------------------------------------------------------------------------------------


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """``x / RMS(x) * weight`` over the last dim (computed in fp32, returned in x's dtype)."""
    x32 = x.float()
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return y.type_as(x) * weight


def rope_tables(head_dim: int, seq_len: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos/sin tables of shape (seq_len, head_dim // 2) for rotary embeddings."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x[..., :h/2], x[..., h/2:]) of x (B, H, T, h) by the position angles."""
    t = x.shape[-2]
    cos, sin = cos[:t].to(x.dtype), sin[:t].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


# --------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.k = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.v = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.o = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, t, d = x.shape
        shape = (b, t, self.n_heads, d // self.n_heads)
        q = self.q(x).view(shape).transpose(1, 2)
        k = self.k(x).view(shape).transpose(1, 2)
        v = self.v(x).view(shape).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, ffn_dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, ffn_dim, bias=False)
        self.up = nn.Linear(dim, ffn_dim, bias=False)
        self.down = nn.Linear(ffn_dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.dim, cfg.ffn_dim)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class LlamaModel(nn.Module):
    """Decoder-only LM: tokens (B, T) int64 -> logits (B, T, vocab)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        if cfg.dim % cfg.n_heads or (cfg.dim // cfg.n_heads) % 2:
            raise ValueError(f"dim {cfg.dim} must split into {cfg.n_heads} even-sized heads")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg.dim // cfg.n_heads, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, self.rope_cos, self.rope_sin)
        return self.lm_head(self.norm(x))


class MLPClassifier(nn.Module):
    """ReLU MLP: features (B, in_dim) -> logits (B, n_classes)."""

    def __init__(self, in_dim: int, hidden: list[int], n_classes: int) -> None:
        super().__init__()
        widths = [in_dim, *hidden]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.head = nn.Linear(widths[-1], n_classes)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.head(x)


# --------------------------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------------------------


def init_weights(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """LLaMA/GaLore init: N(0, 0.02) for linear and embedding weights, zero biases, unit norms.

    Uses ``generator`` so the init depends only on its seed (not on the global RNG)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                if module.weight.device.type == "meta":
                    continue
                module.weight.normal_(0.0, 0.02, generator=generator)
                bias = getattr(module, "bias", None)
                if bias is not None:
                    bias.zero_()
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)


def build_model(model: dict[str, Any], seed: int | None = 0) -> nn.Module:
    """The model for a workload's model dict, initialised from ``seed`` (None: no re-init)."""
    arch = model.get("arch")
    net: nn.Module
    if arch == "llama":
        keys = ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "max_seq_len")
        net = LlamaModel(LlamaConfig(**{k: model[k] for k in keys}))
    elif arch == "mlp":
        net = MLPClassifier(model["in_dim"], list(model["hidden"]), model["n_classes"])
    else:
        raise ValueError(f"unknown arch {arch!r}; valid: llama, mlp")
    if seed is not None:
        init_weights(net, torch.Generator().manual_seed(seed))
    return net
