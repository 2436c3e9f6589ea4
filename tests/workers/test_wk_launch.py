"""Runs under torchrun (workers.launch + workers.rank_main): 2 CPU ranks with gloo.

The global batch is the workload's, split between the ranks, so a DDP or FSDP2 run takes the
same steps as the one-process run up to fp32 summation order: final losses agree to 1e-4
relative after 20 steps of synthetic-lm (measured: < 1e-6). Cancellation and pruning stop every
rank at the same curve point; a rank killed mid-run fails the attempt quickly.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from procs import rank_pid

import optim_core
from workers.launch import CurveReader, run_distributed
from workers.train import run_workload
from workers.train_types import Callbacks, MetricPoint, RankFailure, RankJob

STEPS = 20


def _job(parallel: str, preset: str = "adamw", steps: int = STEPS) -> RankJob:
    recipe = optim_core.presets.get(preset).model_dump(mode="json")
    return RankJob(
        workload="synthetic-lm",
        recipe=recipe,
        steps=steps,
        seed=0,
        lr=None,
        warmup_frac=None,
        device="cpu",
        parallel=parallel,  # type: ignore[arg-type]
        world_size=2,
    )


@pytest.fixture(scope="module")
def single_loss() -> float:
    res = run_workload("synthetic-lm", optim_core.presets.get("adamw"), STEPS, 0, None, "cpu")
    assert res.final_val_loss is not None
    return res.final_val_loss


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_match_one_process(parallel: str, single_loss: float) -> None:
    points: list[MetricPoint] = []
    res = run_distributed(_job(parallel), Callbacks(on_step=points.append))
    assert res.status == "succeeded" and res.steps == STEPS
    assert res.final_val_loss == pytest.approx(single_loss, rel=1e-4)
    assert [p.step for p in points] == [p.step for p in res.curve]  # the launcher saw every point
    assert res.env["world_size"] == 2 and res.env["parallel"] == parallel


def test_cancel_stops_every_rank_at_one_point() -> None:
    seen: list[MetricPoint] = []
    res = run_distributed(
        _job("ddp", steps=200),
        Callbacks(on_step=seen.append, should_cancel=lambda: len(seen) >= 2),
    )
    assert res.status == "cancelled"
    assert res.stopped_step is not None and res.stopped_step < 200


def test_prune_decision_reaches_every_rank() -> None:
    evals: list[int] = []

    def on_eval(point: MetricPoint) -> str:
        evals.append(point.step)
        return "prune"

    res = run_distributed(_job("fsdp", steps=60), Callbacks(on_eval=on_eval))
    assert res.status == "pruned"
    assert res.stopped_step == evals[0] and len(evals) == 1


def test_a_killed_rank_fails_the_run_quickly(tmp_path: Path) -> None:
    seen: list[MetricPoint] = []
    killed: dict[str, float] = {}

    def kill_rank_one(point: MetricPoint) -> None:
        seen.append(point)
        pid = None if killed else rank_pid(1, str(tmp_path))
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed["at"] = time.monotonic()

    with pytest.raises(RankFailure, match="torchrun exit"):
        run_distributed(_job("ddp", steps=2000), Callbacks(on_step=kill_rank_one), tmp_path)
    assert killed, "rank 1 was never found"
    assert time.monotonic() - killed["at"] < 60
    assert len(seen) < 200
    assert "SIGKILL" in (tmp_path / "ranks.log").read_text()


def test_curve_reader_returns_only_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "curve.jsonl"
    reader = CurveReader(path)
    assert reader.read_new() == []
    line = '{"step": 10, "tokens": 1, "elapsed_s": 0.1, "train_loss": 2.0, "val_loss": null, "lr": 0.1}'
    path.write_text(line + "\n" + line[:20])
    assert [p.step for p in reader.read_new()] == [10]
    with path.open("a") as f:
        f.write(line[20:] + "\n")
    assert [p.step for p in reader.read_new()] == [10]
    assert reader.read_new() == []
