"""``python -m workers.rank_main JOB_DIR``: one rank of a run launched through torchrun.

:mod:`workers.launch` writes ``JOB_DIR/job.json`` (a :class:`RankJob`) and starts
``torch.distributed.run --nproc_per_node N -m workers.rank_main JOB_DIR``. Every rank joins the
group and trains (:func:`workers.train.run_workload` with its :class:`RankContext`); rank 0
talks to the launching process through files in ``JOB_DIR`` (the lease, the curve's database
writes, cancellation and pruning stay with the launcher):

- ``curve.jsonl``: one JSON line per curve point, appended and flushed as the run goes;
- ``decision-<step>``: the launcher's answer (``continue`` | ``prune``) to an evaluation point;
  rank 0 waits for it and broadcasts it, so every rank stops at the same step;
- ``cancel``: created by the launcher; polled by rank 0 at every curve point and broadcast;
- ``result.json``: the :class:`TrainResult`, written by rank 0 at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from core.config import get_settings
from core.process import die_with_parent
from workers.parallel import RankContext, init_rank, leave_group
from workers.train import run_workload
from workers.train_types import Callbacks, MetricPoint, RankJob

DECISION_POLL_S = 0.05


class RankCallbacks:
    """The trainer's callbacks on every rank; only rank 0 touches the files."""

    def __init__(self, ctx: RankContext, job_dir: Path, timeout_s: float) -> None:
        self.ctx, self.job_dir, self.timeout_s = ctx, job_dir, timeout_s

    def on_step(self, point: MetricPoint) -> None:
        if self.ctx.is_main:
            with (self.job_dir / "curve.jsonl").open("a") as f:
                f.write(json.dumps(asdict(point)) + "\n")

    def on_eval(self, point: MetricPoint) -> str:
        prune = self.ctx.is_main and self._await_decision(point.step) == "prune"
        return "prune" if self._agree(prune) else "continue"

    def should_cancel(self) -> bool:
        return self._agree(self.ctx.is_main and (self.job_dir / "cancel").exists())

    def _await_decision(self, step: int) -> str:
        path = self.job_dir / f"decision-{step}"
        deadline = time.monotonic() + self.timeout_s
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no decision from the launcher for step {step}")
            time.sleep(DECISION_POLL_S)
        return path.read_text().strip()

    def _agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""
        if self.ctx.world_size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.ctx.device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def callbacks(self) -> Callbacks:
        return Callbacks(
            on_step=self.on_step, on_eval=self.on_eval, should_cancel=self.should_cancel
        )


def main(argv: list[str] | None = None) -> int:
    die_with_parent()  # torchrun's agent gone (its worker killed): no rank trains on alone
    job_dir = Path((argv if argv is not None else sys.argv[1:])[0])
    job = RankJob.read(job_dir)
    settings = get_settings()
    cores = os.cpu_count() or 1
    torch.set_num_threads(settings.torch_threads or max(1, cores // job.world_size))
    ctx = init_rank(job.parallel, job.device, settings.dist_timeout_s)
    try:
        result = run_workload(
            job.workload,
            job.recipe,
            steps=job.steps,
            seed=job.seed,
            lr=job.lr,
            device=ctx.device,
            callbacks=RankCallbacks(ctx, job_dir, settings.dist_timeout_s).callbacks(),
            data_path=job.data_path,
            warmup_frac=job.warmup_frac,
            rank=ctx,
        )
        if ctx.is_main:
            (job_dir / "result.json").write_text(json.dumps(result.to_dict()))
    finally:
        leave_group()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without interpreter teardown: after the group is destroyed, freeing FSDP2/gloo
    # objects at exit aborted a CPU rank ("terminate called without an active exception") in
    # 3 of 10 runs of 20 steps, with the result already written.
    os._exit(code)
