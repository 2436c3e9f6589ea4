"""The trainer: one readable loop that turns (model, optimizer, data) into a measured result.

It knows nothing of the DB or Celery: the caller passes ``Callbacks`` (progress, pruning,
cooperative cancellation). A run that goes non-finite or explodes ends ``diverged`` with the
step, never with an exception. Seeded: the model init and the data order depend on the seed
only (``run_workload``); ``train`` also seeds torch's global RNG for optimizers that draw
random numbers (e.g. Gaussian projections), so a CPU run is bitwise reproducible.

References: optimizers.md §0.2 (GaLore protocol: linear warmup over the first 10 % of steps from
0, then cosine to 0.1 of the peak lr; the scheduler steps once per optimizer step).
"""

from __future__ import annotations

import math
import os
import platform
import resource
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workers.data import Batches
from workers.train_types import Callbacks, MetricPoint, Status, TrainConfig, TrainResult

if TYPE_CHECKING:
    import optim_core

__all__ = [
    "Callbacks",
    "MetricPoint",
    "TrainConfig",
    "TrainResult",
    "lr_factor",
    "run_workload",
    "train",
]

# --------------------------------------------------------------------------------------------
# small pure functions
# --------------------------------------------------------------------------------------------


def lr_factor(step: int, total: int, warmup_frac: float = 0.1, min_ratio: float = 0.1) -> float:
    """GaLore schedule multiplier for 0-based ``step``: ``s/warmup``, then cosine to min_ratio."""
    warmup = int(total * warmup_frac)
    if step < warmup:
        return step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy (nats) for LM logits (B, T, V) or class logits (B, C)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))


def _first_bad(losses: Tensor, limit: float) -> int | None:
    """Index of the first non-finite or exploded loss in ``losses`` (None if all fine)."""
    bad = ~torch.isfinite(losses) | (losses > limit)
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None


def environment(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def _peak_mem(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Batches,
    device: torch.device,
    amp: Callable[[], AbstractContextManager[Any]] = nullcontext,
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


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Batches,
    config: TrainConfig,
    callbacks: Callbacks | None = None,
) -> TrainResult:
    """Train ``model`` for ``config.steps`` steps; never raises for a diverging run."""
    cb = callbacks or Callbacks()
    device = torch.device(config.device)
    autocast = config.bf16_autocast and device.type == "cuda"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(config.seed)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            1.0
            if config.schedule == "constant"
            else lr_factor(s, config.steps, config.warmup_frac, config.min_lr_ratio)
        ),
    )
    loop = _Loop(model, optimizer, sched, data, config, cb, device, autocast)
    return loop.run()


class _Loop:
    """State of one ``train`` call (kept out of ``train`` so each phase is a short method)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        sched: torch.optim.lr_scheduler.LRScheduler,
        data: Batches,
        config: TrainConfig,
        cb: Callbacks,
        device: torch.device,
        autocast: bool,
    ) -> None:
        self.model, self.opt, self.sched, self.data = model, optimizer, sched, data
        self.cfg, self.cb, self.device = config, cb, device
        self.amp: Callable[[], AbstractContextManager[Any]] = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if autocast else nullcontext
        )
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.curve: list[MetricPoint] = []
        self.window: list[Tensor] = []  # per-step losses since the last point (on device)
        self.first_loss: float | None = None
        self.val_loss: float | None = None
        self.steps_to_target: int | None = None
        self.excluded_s = 0.0  # evaluations and callbacks: not training time
        self.last_lr = 0.0  # largest group lr of the latest step
        self.loss: Tensor | None = None  # loss of the current step (detached)

    def run(self) -> TrainResult:
        start = time.perf_counter()
        self.model.train()
        status: Status = "succeeded"
        stopped: int | None = None
        step = 0
        while step < self.cfg.steps:
            try:
                self.window.append(self._step(step))
            except RuntimeError:  # e.g. an SVD of a non-finite gradient inside the optimizer
                if not self._went_nonfinite():
                    raise
                status, stopped = "diverged", step + 1
                break
            step += 1
            if step % self.cfg.log_every and step % self.cfg.eval_every and step < self.cfg.steps:
                continue
            outcome, at = self._checkpoint(step, start)
            if outcome != "succeeded":
                status, stopped = outcome, at
                break
        return self._result(status, stopped, step if stopped is None else stopped, start)

    def _step(self, step: int) -> Tensor:
        self.loss = None  # an error before this step's loss exists is never a divergence
        x, y = self.data.train_batch(step)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with self.amp():
            loss = lm_loss(self.model(x), y)
        self.loss = loss.detach()
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.last_lr = max(g["lr"] for g in self.opt.param_groups)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        return self.loss

    def _went_nonfinite(self) -> bool:
        """True when the current step's loss or a gradient is non-finite."""
        if self.loss is not None and not bool(torch.isfinite(self.loss)):
            return True
        grads = [p.grad for p in self.params if p.grad is not None]
        return any(not bool(torch.isfinite(g).all()) for g in grads)

    def _checkpoint(self, step: int, start: float) -> tuple[Status, int | None]:
        """Check the window for divergence, record a point, evaluate, poll callbacks."""
        losses = torch.stack(self.window).float().cpu()
        self.window.clear()
        if self.first_loss is None:
            self.first_loss = float(losses[0])
        limit = (
            self.cfg.explode_factor * abs(self.first_loss)
            if math.isfinite(self.first_loss)
            else -math.inf
        )
        bad = _first_bad(losses, limit)
        if bad is not None:
            return "diverged", step - len(losses) + 1 + bad
        point = MetricPoint(
            step=step,
            tokens=step * self.data.tokens_per_batch,
            elapsed_s=time.perf_counter() - start,
            train_loss=float(losses.mean()),
            val_loss=None,
            lr=float(self.last_lr),
        )
        is_eval = step % self.cfg.eval_every == 0 or step == self.cfg.steps
        t0 = time.perf_counter()
        try:
            return self._report(point, is_eval)
        finally:
            self.excluded_s += time.perf_counter() - t0

    def _report(self, point: MetricPoint, is_eval: bool) -> tuple[Status, int | None]:
        """Evaluate (on eval points), record the point, call the callbacks.

        A non-finite validation loss (e.g. the last update made the weights NaN/inf while the
        train losses were still finite) is a divergence at this step."""
        if is_eval and not self._evaluate(point):
            return "diverged", point.step
        self.curve.append(point)
        if self.cb.on_step:
            self.cb.on_step(point)
        if is_eval and self.cb.on_eval and self.cb.on_eval(point) == "prune":
            return "pruned", point.step
        if self.cb.should_cancel and self.cb.should_cancel():
            return "cancelled", point.step
        return "succeeded", None

    def _evaluate(self, point: MetricPoint) -> bool:
        """Set the point's val loss and steps-to-target; False when the val loss is not finite."""
        final = point.step == self.cfg.steps
        val = evaluate(self.model, self.data, self.device, self.amp, final=final)
        if not math.isfinite(val):
            return False
        point.val_loss = self.val_loss = val
        target = self.cfg.target_loss
        if self.steps_to_target is None and target is not None and val <= target:
            self.steps_to_target = point.step
        return True

    def _result(
        self, status: Status, stopped: int | None, steps: int, start: float
    ) -> TrainResult:
        import optim_core

        n_params = sum(p.numel() for p in self.params)
        state_bytes = int(optim_core.measure_state_bytes(self.opt))
        tokens = steps * self.data.tokens_per_batch
        wall = time.perf_counter() - start
        train_s = wall - self.excluded_s
        return TrainResult(
            status=status,
            final_val_loss=None if status == "diverged" else self.val_loss,
            steps=steps,
            stopped_step=stopped,
            steps_to_target=self.steps_to_target,
            target_loss=self.cfg.target_loss,
            tokens_per_s=tokens / train_s if train_s > 0 else 0.0,
            wall_s=wall,
            state_bytes=state_bytes,
            n_params=n_params,
            state_bytes_per_param=state_bytes / max(1, n_params),
            peak_mem_bytes=_peak_mem(self.device),
            curve=self.curve,
            env=environment(self.device),
        )


# --------------------------------------------------------------------------------------------
# a whole workload
# --------------------------------------------------------------------------------------------


def resolve_recipe(recipe: optim_core.Recipe | Mapping[str, Any] | str) -> optim_core.Recipe:
    """A Recipe from a Recipe, a recipe dict, or a preset name."""
    import optim_core

    if isinstance(recipe, str):
        return optim_core.presets.get(recipe)
    if isinstance(recipe, Mapping):
        return optim_core.Recipe.model_validate(dict(recipe))
    return recipe


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


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
) -> TrainResult:
    """Build the workload's data and model (seeded), the recipe's optimizer, and train.

    ``steps`` None = the workload's default; ``lr`` None = the recipe's lr; ``warmup_frac``
    None = the trainer's default (0.1). ``data_path`` is the
    directory of ``train.bin``/``val.bin`` for ``tokens-lm*``; ``cache_dir`` defaults to
    ``settings.cache_dir``. Raises ``DataUnavailableError`` when the data cannot be had."""
    import optim_core
    from core.workloads import get_workload
    from workers.data import load_data
    from workers.model import build_model

    spec = get_workload(workload_name)
    if cache_dir is None:
        from core.config import get_settings

        cache_dir = get_settings().cache_dir
    assert cache_dir is not None
    n_steps = steps or spec.default_steps
    dev = device or default_device()
    data = load_data(spec, seed, Path(cache_dir), Path(data_path) if data_path else None)
    model = build_model(spec.model, seed=seed).to(dev)
    optimizer = optim_core.build(resolve_recipe(recipe), model, lr=lr, model_facts=spec.model)
    config = workload_config(spec, n_steps, seed, dev, warmup_frac)
    return train(model, optimizer, data, config, callbacks)


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
