"""Run one training run as ``world_size`` processes under torchrun, from the worker's task.

The launching process keeps what a one-process run keeps: the lease, the curve's database
writes, cancellation and the pruner. It starts ``python -m torch.distributed.run --standalone
--nproc_per_node N --max-restarts 0 -m workers.rank_main JOB_DIR`` in its own process group,
follows rank 0's ``curve.jsonl`` (:mod:`workers.rank_main`), answers evaluation points with the
pruner's decision, and creates ``cancel`` when the run is cancelled or its lease is lost.

A rank that dies makes torchrun stop the others and exit non-zero; the launcher then raises
:class:`RankFailure` (the attempt fails and the reaper retries it like any other). Collectives
time out after ``Settings.dist_timeout_s``, and the launcher kills the whole process group if
torchrun itself outlives the run (``Settings.dist_timeout_s`` past the last curve point).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from core.config import get_settings
from core.process import die_with_parent
from workers.train_types import Callbacks, MetricPoint, RankFailure, RankJob, TrainResult

POLL_S = 0.2
LOG_TAIL_CHARS = 4000


def torchrun_command(job_dir: Path, world_size: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={world_size}",
        "--max-restarts=0",
        "-m",
        "workers.rank_main",
        str(job_dir),
    ]


def run_distributed(
    job: RankJob, callbacks: Callbacks | None = None, job_dir: Path | None = None
) -> TrainResult:
    """Train ``job`` under torchrun and return rank 0's result (raises :class:`RankFailure`).

    ``job_dir``: where the job's files (and ``ranks.log``) go; default a temporary directory."""
    if job_dir is not None:
        return _run_in(job, callbacks or Callbacks(), job_dir)
    with tempfile.TemporaryDirectory(prefix="optforge-rank-") as tmp:
        return _run_in(job, callbacks or Callbacks(), Path(tmp))


def _run_in(job: RankJob, callbacks: Callbacks, job_dir: Path) -> TrainResult:
    job.write(job_dir)
    with (job_dir / "ranks.log").open("w") as log:
        proc = _start(job_dir, job.world_size, log)
        try:
            _follow(proc, job_dir, callbacks)
        finally:
            stop_group(proc)
    return _outcome(proc.returncode, job_dir)


def _start(job_dir: Path, world_size: int, log: IO[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        torchrun_command(job_dir, world_size),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: one signal stops every rank
        preexec_fn=die_with_parent,  # a killed worker takes torchrun (and so the ranks) along
        env={  # faulthandler: a rank that crashes in C++ leaves its Python stack in the log
            **os.environ,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PYTHONFAULTHANDLER": "1",
        },
    )


def _follow(proc: subprocess.Popen[bytes], job_dir: Path, cb: Callbacks) -> None:
    """Forward curve points until torchrun exits; answer evaluations; relay cancellation."""
    reader = CurveReader(job_dir / "curve.jsonl")
    quiet_limit = get_settings().dist_timeout_s
    last_news = time.monotonic()
    while proc.poll() is None:
        points = reader.read_new()
        for point in points:
            _forward(point, job_dir, cb)
        if points:
            last_news = time.monotonic()
        if cb.should_cancel and cb.should_cancel():
            (job_dir / "cancel").touch()
        if time.monotonic() - last_news > quiet_limit:
            raise RankFailure(f"no progress from the ranks for {quiet_limit:.0f} s")
        time.sleep(POLL_S)
    for point in reader.read_new():
        if cb.on_step:
            cb.on_step(point)


def _forward(point: MetricPoint, job_dir: Path, cb: Callbacks) -> None:
    if cb.on_step:
        cb.on_step(point)
    if point.val_loss is None:
        return
    decision = cb.on_eval(point) if cb.on_eval else "continue"
    tmp = job_dir / f".decision-{point.step}"
    tmp.write_text(decision)
    tmp.rename(job_dir / f"decision-{point.step}")  # atomic: rank 0 never reads half a file


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM torchrun's process group, SIGKILL after ``grace_s``; no-op once it has exited."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _outcome(returncode: int | None, job_dir: Path) -> TrainResult:
    result = job_dir / "result.json"
    if returncode != 0 or not result.exists():
        tail = (job_dir / "ranks.log").read_text(errors="replace")[-LOG_TAIL_CHARS:]
        raise RankFailure(f"distributed run failed (torchrun exit {returncode}): {tail}")
    return result_from_dict(json.loads(result.read_text()))


def result_from_dict(d: dict[str, Any]) -> TrainResult:
    curve = [MetricPoint(**p) for p in d.pop("curve", [])]
    return TrainResult(**d, curve=curve)


class CurveReader:
    """Complete lines appended to ``path`` since the last call, as curve points."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read_new(self) -> list[MetricPoint]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.offset += end
        return [MetricPoint(**json.loads(line)) for line in chunk[:end].splitlines() if line]
