"""The trainer: one readable loop that turns (model, optimizer, data) into a measured result.

It knows nothing of the DB or Celery: the caller passes ``Callbacks`` (progress, pruning,
cooperative cancellation). A run that goes non-finite or explodes ends ``diverged`` with the
step, never with an exception. Seeded: the model init and the data order depend on the seed
only (``run_workload``); ``train`` also seeds torch's global RNG for optimizers that draw
random numbers (e.g. Gaussian projections), so a CPU run is bitwise reproducible.

Read it top to bottom: :func:`run_workload` builds data, model and optimizer; :func:`train` is
the loop (schedule, batch, forward, backward, clip, step, and every ``log_every`` steps the
checkpoint: divergence check, curve point, evaluation, callbacks, cancellation); the small
functions after it are the loop's hooks.

References: docs/references.md#galore-protocol (the lr schedule: linear warmup from 0, then
cosine to 0.1 of the peak; stepped once per optimizer step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import optim_core
from core.config import get_settings
from core.workloads import get_workload
from workers.data import Batches, load_data
from workers.hardware import default_device, environment, peak_mem
from workers.model import build_model
from workers.parallel import RankBatches, RankContext
from workers.train_types import Callbacks, MetricPoint, Status, TrainConfig, TrainResult

__all__ = [
    "Callbacks",
    "MetricPoint",
    "TrainConfig",
    "TrainResult",
    "lr_factor",
    "run_workload",
    "train",
]

Amp = Callable[[], AbstractContextManager[Any]]
RUNNING: tuple[Status, int | None] = ("succeeded", None)  # (status, stopped step) of a live run


# --------------------------------------------------------------------------------------------
# a whole workload: data, model, optimizer, then the loop
# --------------------------------------------------------------------------------------------


def run_workload(
    workload_name: str,
    recipe: optim_core.Recipe | Mapping[str, Any] | str,
    steps: int | None,
    seed: int,
    lr: float | None,
    device: str | None = None,
    callbacks: Callbacks | None = None,
    *,
    data_path: Path | str | None = None,
    cache_dir: Path | None = None,
    warmup_frac: float | None = None,
    rank: RankContext | None = None,
) -> TrainResult:
    """Build the workload's data and model (seeded), the recipe's optimizer, and train.

    ``rank`` (a torchrun rank, :mod:`workers.parallel`): the model is wrapped (DDP) or sharded
    (FSDP2) after it is built, the optimizer sees the unwrapped parameter names, and this rank
    trains on its share of every batch.

    ``steps`` None = the workload's default; ``lr`` None = the recipe's lr; ``warmup_frac``
    None = the trainer's default (0.1). ``data_path`` is the
    directory of ``train.bin``/``val.bin`` for ``tokens-lm*``; ``cache_dir`` defaults to
    ``settings.cache_dir``. Raises ``DataUnavailableError`` when the data cannot be had."""
    spec = get_workload(workload_name)
    if cache_dir is None:
        cache_dir = get_settings().cache_dir
    assert cache_dir is not None
    ctx = rank or RankContext(device=device or default_device())
    data = load_data(spec, seed, Path(cache_dir), Path(data_path) if data_path else None)
    model = build_model(spec.model, seed=seed).to(ctx.device)
    trained = ctx.wrap(model)
    optimizer = optim_core.build(resolve_recipe(recipe), model, lr=lr, model_facts=spec.model)
    config = workload_config(spec, steps or spec.default_steps, seed, ctx.device, warmup_frac)
    if ctx.world_size > 1:
        data = RankBatches(data, ctx)
    return _with_rank_facts(train(trained, optimizer, data, config, callbacks, ctx), ctx)


def _with_rank_facts(result: TrainResult, ctx: RankContext) -> TrainResult:
    """Record the parallel layout; FSDP state bytes are the sum of the ranks' shards."""
    result.env.update(parallel=ctx.mode, world_size=ctx.world_size)
    if ctx.mode == "fsdp":
        result.env["state_bytes_per_rank"] = result.state_bytes
        result.state_bytes = ctx.total(result.state_bytes)
        result.state_bytes_per_param = result.state_bytes / max(1, result.n_params)
    return result


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Batches,
    config: TrainConfig,
    callbacks: Callbacks | None = None,
    rank: RankContext | None = None,
) -> TrainResult:
    """Train ``model`` for ``config.steps`` steps; never raises for a diverging run. ``rank``:
    this process's place in a multi-process run (curve losses are averaged over the ranks)."""
    device, amp, sched = setup(optimizer, config)  # also seeds torch, resets CUDA peak memory
    params = [p for p in model.parameters() if p.requires_grad]
    validate = partial(evaluate, model, data, device, amp)  # validate(final) -> val loss
    n_params = sum(p.numel() for p in params)
    run = Progress(data.tokens_per_batch, n_params, rank or RankContext(device=config.device))
    model.train()
    status, stopped = RUNNING
    step = 0
    while step < config.steps and status == "succeeded":
        loss: Tensor | None = None  # an error before this step's loss is never a divergence
        try:
            x, y = (t.to(device, non_blocking=True) for t in data.train_batch(step))
            with amp():
                loss = lm_loss(model(x), y)
            loss.backward()
            clip_grads(params, config.grad_clip)
            run.last_lr = max(g["lr"] for g in optimizer.param_groups)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sched.step()
        except RuntimeError:  # e.g. an SVD of a non-finite gradient inside the optimizer
            if not went_nonfinite(loss, params):
                raise
            status, stopped = "diverged", step + 1
            break
        run.window.append(loss.detach())
        step += 1
        if step % config.log_every == 0 or step % config.eval_every == 0 or step == config.steps:
            status, stopped = checkpoint(run, step, config, callbacks or Callbacks(), validate)
    return result(run, status, stopped, config, optimizer)


# --------------------------------------------------------------------------------------------
# the loop's hooks
# --------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """What one ``train`` call has measured so far (``start``: its clock)."""

    tokens_per_batch: int
    n_params: int
    rank: RankContext = field(default_factory=RankContext)  # world size 1: one process
    curve: list[MetricPoint] = field(default_factory=list)
    window: list[Tensor] = field(default_factory=list)  # step losses since the last point
    first_loss: float | None = None
    val_loss: float | None = None
    steps_to_target: int | None = None
    excluded_s: float = 0.0  # evaluations and callbacks: not training time
    last_lr: float = 0.0  # largest group lr of the latest step
    start: float = field(default_factory=time.perf_counter)


def checkpoint(
    run: Progress, step: int, config: TrainConfig, cb: Callbacks, validate: Callable[[bool], float]
) -> tuple[Status, int | None]:
    """Every ``log_every`` steps and at evaluations: divergence check of the window, a curve
    point (with the validation loss at eval points), the callbacks -> (status, stopped step)."""
    # the mean over ranks (the window itself in one process): every rank decides alike
    losses = run.rank.mean(torch.stack(run.window)).float().cpu()
    run.window.clear()
    bad = diverged_at(losses, run, config.explode_factor)
    if bad is not None:
        return "diverged", step - len(losses) + 1 + bad
    point = MetricPoint(
        step=step,
        tokens=step * run.tokens_per_batch,
        elapsed_s=time.perf_counter() - run.start,
        train_loss=float(losses.mean()),
        val_loss=None,
        lr=float(run.last_lr),
    )
    is_eval = step % config.eval_every == 0 or step == config.steps
    t0 = time.perf_counter()
    try:
        if is_eval and not record_eval(point, run, config, validate(step == config.steps)):
            return "diverged", step  # finite train losses, but the last update broke the weights
        return write_point(point, is_eval, run, cb)
    finally:
        run.excluded_s += time.perf_counter() - t0


def diverged_at(losses: Tensor, run: Progress, explode_factor: float) -> int | None:
    """Index in ``losses`` of the first non-finite loss or one above ``explode_factor`` × the
    run's first loss (None: all fine); the first call remembers the first loss."""
    if run.first_loss is None:
        run.first_loss = float(losses[0])
    first = run.first_loss
    limit = explode_factor * abs(first) if math.isfinite(first) else -math.inf
    return _first_bad(losses, limit)


def record_eval(point: MetricPoint, run: Progress, config: TrainConfig, val: float) -> bool:
    """Set the validation loss of ``point`` and the run (and steps-to-target); False when it
    is not finite (a divergence)."""
    if not math.isfinite(val):
        return False
    point.val_loss = run.val_loss = val
    target = config.target_loss
    if run.steps_to_target is None and target is not None and val <= target:
        run.steps_to_target = point.step
    return True


def write_point(
    point: MetricPoint, is_eval: bool, run: Progress, cb: Callbacks
) -> tuple[Status, int | None]:
    """Append ``point`` to the curve, then ``on_step``, ``on_eval`` (may prune) and the
    cancellation poll."""
    run.curve.append(point)
    if cb.on_step:
        cb.on_step(point)
    if is_eval and cb.on_eval and cb.on_eval(point) == "prune":
        return "pruned", point.step
    if cb.should_cancel and cb.should_cancel():
        return "cancelled", point.step
    return "succeeded", None


def clip_grads(params: Sequence[Tensor], max_norm: float | None) -> None:
    """Clip the global grad norm to ``max_norm`` (None or 0: off)."""
    if max_norm:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def went_nonfinite(loss: Tensor | None, params: Sequence[Tensor]) -> bool:
    """True when the step's loss or a gradient is non-finite."""
    if loss is not None and not bool(torch.isfinite(loss.detach())):
        return True
    grads = [p.grad for p in params if p.grad is not None]
    return any(not bool(torch.isfinite(g).all()) for g in grads)


def result(
    run: Progress,
    status: Status,
    stopped: int | None,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
) -> TrainResult:
    """The measured result: a stopped run counts its steps up to ``stopped``."""
    steps = config.steps if stopped is None else stopped
    state_bytes = int(optim_core.measure_state_bytes(optimizer))
    device = torch.device(config.device)
    wall = time.perf_counter() - run.start
    train_s = wall - run.excluded_s
    return TrainResult(
        status=status,
        final_val_loss=None if status == "diverged" else run.val_loss,
        steps=steps,
        stopped_step=stopped,
        steps_to_target=run.steps_to_target,
        target_loss=config.target_loss,
        tokens_per_s=steps * run.tokens_per_batch / train_s if train_s > 0 else 0.0,
        wall_s=wall,
        state_bytes=state_bytes,
        n_params=run.n_params,
        state_bytes_per_param=state_bytes / max(1, run.n_params),
        peak_mem_bytes=peak_mem(device),
        curve=run.curve,
        env=environment(device),
    )


# --------------------------------------------------------------------------------------------
# small pure functions and settings
# --------------------------------------------------------------------------------------------


def lr_factor(step: int, total: int, warmup_frac: float = 0.1, min_ratio: float = 0.1) -> float:
    """GaLore schedule multiplier for 0-based ``step``: ``s/warmup``, then cosine to min_ratio."""
    warmup = int(total * warmup_frac)
    if step < warmup:
        return step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def setup(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> tuple[torch.device, Amp, torch.optim.lr_scheduler.LambdaLR]:
    """The loop's device, autocast context and lr schedule; seeds torch's global RNG and
    resets the CUDA peak-memory counter."""
    device = torch.device(config.device)
    amp = autocast(config, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(config.seed)
    return device, amp, lr_schedule(optimizer, config)


def lr_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """``config.schedule`` on every group's lr (stepped once per optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            1.0
            if config.schedule == "constant"
            else lr_factor(s, config.steps, config.warmup_frac, config.min_lr_ratio)
        ),
    )


def autocast(config: TrainConfig, device: torch.device) -> Amp:
    """The forward's autocast context: bf16 on CUDA when ``config.bf16_autocast``, else none."""
    if config.bf16_autocast and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy (nats) for LM logits (B, T, V) or class logits (B, C)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))


def _first_bad(losses: Tensor, limit: float) -> int | None:
    """Index of the first non-finite or exploded loss in ``losses`` (None if all fine)."""
    bad = ~torch.isfinite(losses) | (losses > limit)
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Batches,
    device: torch.device,
    amp: Amp = nullcontext,
    final: bool = False,
) -> float:
    """Mean loss per target over ``data.val_batches(final)`` (``amp``: the autocast context;
    ``final``: the larger final-evaluation set, used at the last step)."""
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), device=device), 0
    for x, y in data.val_batches(final):
        x, y = x.to(device), y.to(device)
        with amp():
            total += lm_loss(model(x), y) * y.numel()
        count += y.numel()
    model.train(was_training)
    return float(total) / max(1, count)


def resolve_recipe(recipe: optim_core.Recipe | Mapping[str, Any] | str) -> optim_core.Recipe:
    """A Recipe from a Recipe, a recipe dict, or a preset name."""
    if isinstance(recipe, str):
        return optim_core.presets.get(recipe)
    if isinstance(recipe, Mapping):
        return optim_core.Recipe.model_validate(dict(recipe))
    return recipe


def workload_config(
    spec: Any, steps: int, seed: int, device: str, warmup_frac: float | None = None
) -> TrainConfig:
    """The loop settings of a run of workload ``spec`` (``warmup_frac`` None: the default)."""
    config = TrainConfig(
        steps=steps,
        seed=seed,
        eval_every=min(spec.eval_every, steps),
        log_every=max(1, min(10, spec.eval_every)),
        target_loss=spec.target_loss,
        device=device,
    )
    if warmup_frac is not None:
        config.warmup_frac = warmup_frac
    return config
