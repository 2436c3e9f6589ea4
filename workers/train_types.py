"""The trainer's data types: loop configuration, curve points, callbacks, the result.

Kept apart from the loop (workers/train.py) so callers and the CLI can type against them;
``workers.train`` re-exports every name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["succeeded", "diverged", "cancelled", "pruned"]
ParallelMode = Literal["none", "ddp", "fsdp"]  # how the processes of a run split it


class RankFailure(RuntimeError):
    """A rank of a multi-process run (or torchrun itself) died or hung: the attempt ends without
    a result of its own and the run is retried like a lost worker's (:mod:`workers.launch`)."""


@dataclass
class TrainConfig:
    """Everything about the loop that is not the model, the optimizer or the data."""

    steps: int  # optimizer steps
    seed: int = 0  # seeds torch's global RNG (optimizer randomness); init/data are seeded upstream
    warmup_frac: float = 0.1  # linear warmup from 0 over this fraction of steps (GaLore)
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of the peak lr (GaLore)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float | None = None  # max global grad norm; None/0 = off (GaLore: off)
    eval_every: int = 50  # steps between held-out evaluations (the last step always evaluates)
    log_every: int = 10  # steps between curve points / on_step / cancellation checks
    target_loss: float | None = None  # val loss for steps-to-target
    explode_factor: float = 4.0  # train loss > factor * first loss counts as diverged
    device: str = "cpu"
    bf16_autocast: bool = True  # on CUDA only; weights stay fp32


@dataclass
class MetricPoint:
    """One point of the curve (one row of ``run_metrics``; ``step`` is unique)."""

    step: int
    tokens: int
    elapsed_s: float
    train_loss: float | None  # mean over the steps since the previous point
    val_loss: float | None  # set on evaluation points
    lr: float  # largest param-group lr in this step (after the schedule)


@dataclass
class Callbacks:
    """Hooks into a run. ``on_step`` sees every curve point (every ``log_every`` steps and
    evaluations); ``on_eval`` sees evaluation points and may return ``"prune"``;
    ``should_cancel`` is polled at every curve point."""

    on_step: Callable[[MetricPoint], None] | None = None
    on_eval: Callable[[MetricPoint], str] | None = None
    should_cancel: Callable[[], bool] | None = None


@dataclass
class TrainResult:
    status: Status
    final_val_loss: float | None  # last evaluation (None if diverged or never evaluated)
    steps: int  # optimizer steps taken
    stopped_step: int | None  # step where a diverged/cancelled/pruned run stopped
    steps_to_target: int | None  # first eval step with val loss <= target (None: not reached)
    target_loss: float | None
    tokens_per_s: float  # training tokens / (wall time - evaluations - callbacks)
    wall_s: float  # the whole call, evaluations included
    state_bytes: int  # measured optimizer state (optim_core.measure_state_bytes)
    n_params: int
    state_bytes_per_param: float
    peak_mem_bytes: int  # CUDA max allocated, else the process's peak RSS
    curve: list[MetricPoint] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RankJob:
    """What every rank of one run trains (written by the launcher as ``job.json``)."""

    workload: str
    recipe: dict[str, Any]
    steps: int | None
    seed: int
    lr: float | None
    warmup_frac: float | None
    device: str
    parallel: ParallelMode
    world_size: int
    data_path: str | None = None

    def write(self, job_dir: Path) -> None:
        (job_dir / "job.json").write_text(json.dumps(asdict(self)))

    @staticmethod
    def read(job_dir: Path) -> RankJob:
        return RankJob(**json.loads((job_dir / "job.json").read_text()))
