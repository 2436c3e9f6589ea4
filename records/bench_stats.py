"""Statistics of a benchmark cell: pure functions of per-seed final losses and step times.

* ``mean_ci``: mean and two-sided 95 % confidence interval from the t-distribution (n - 1 df).
* ``welch_p``: two-sided Welch t-test p-value of a recipe's seeds against the baseline's seeds
  at the same horizon (unequal variances).
* ``steps_to_reach``: how many steps the tuned baseline needs to reach a loss, read off its
  loss-vs-horizon curve (means over seeds at each horizon, made monotone by a running minimum,
  interpolated linearly in log-steps). A loss below the baseline's best is *censored* ("> max
  horizon"); a loss above its loss at the shortest horizon is censored "< min horizon". Nothing
  is extrapolated.
* ``speedup``: baseline steps to the recipe's mean loss / the recipe's steps, with a 95 %
  percentile-bootstrap interval (seeds resampled with replacement within each arm and horizon,
  fixed RNG seed, so a report is reproducible); censored draws are clipped at their bound and
  the interval says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 0


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """(mean, (low, high)) with a t-interval; a single value has an infinite interval."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, (-math.inf, math.inf)
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, (mean - half, mean + half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Welch t-test p-value (None with fewer than 2 values in an arm)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return None
    if x.std(ddof=1) == 0 and y.std(ddof=1) == 0:
        return 1.0 if x.mean() == y.mean() else 0.0
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


@dataclass(frozen=True)
class Reach:
    """Steps the baseline needs for a loss; ``censored`` is ``">"`` / ``"<"`` at a bound."""

    steps: float
    censored: str | None = None


def monotone(curve: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """The baseline curve sorted by horizon with a running minimum of the loss."""
    out: list[tuple[int, float]] = []
    for horizon, loss in sorted(curve):
        out.append((horizon, min(loss, out[-1][1]) if out else loss))
    return out


def steps_to_reach(loss: float, curve: Sequence[tuple[int, float]]) -> Reach:
    """Baseline steps to reach ``loss`` on its (horizon, mean loss) curve; see module doc."""
    points = monotone(curve)
    first_h, first_l = points[0]
    if loss >= first_l:
        return Reach(float(first_h), None if loss == first_l else "<")
    for (h0, l0), (h1, l1) in zip(points, points[1:], strict=False):
        if l1 <= loss < l0:
            frac = (l0 - loss) / (l0 - l1)
            return Reach(float(math.exp(math.log(h0) + frac * (math.log(h1) - math.log(h0)))))
    return Reach(float(points[-1][0]), ">")


@dataclass(frozen=True)
class Speedup:
    """Steps speedup vs the baseline; ``censored``: the point is only a bound (">" / "<")."""

    steps: float
    ci95: tuple[float, float]
    censored: str | None
    ci_censored: bool


def speedup(
    losses: Sequence[float],
    horizon: int,
    baseline: Mapping[int, Sequence[float]],
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = BOOTSTRAP_SEED,
) -> Speedup:
    """Speedup in steps of a cell (its seeds' final losses at ``horizon``) vs the baseline
    (horizon -> its seeds' final losses), with a bootstrap CI (see module docstring)."""
    arms = sorted((h, np.asarray(v, dtype=float)) for h, v in baseline.items())
    point = steps_to_reach(float(np.mean(losses)), [(h, float(v.mean())) for h, v in arms])
    rng = np.random.default_rng(seed)
    means = _boot_means(rng, np.asarray(losses, dtype=float), draws)
    curves = [(h, _boot_means(rng, v, draws)) for h, v in arms]
    samples, censored = [], False
    for b in range(draws):
        reach = steps_to_reach(float(means[b]), [(h, float(m[b])) for h, m in curves])
        censored = censored or reach.censored is not None
        samples.append(reach.steps / horizon)
    low, high = np.percentile(samples, [2.5, 97.5])
    return Speedup(point.steps / horizon, (float(low), float(high)), point.censored, censored)


def _boot_means(rng: np.random.Generator, x: np.ndarray, draws: int) -> np.ndarray:
    """Means of ``draws`` resamples of ``x`` with replacement (one vectorised draw)."""
    return np.asarray(x[rng.integers(0, len(x), size=(draws, len(x)))].mean(axis=1))


def time_speedup(steps_speedup: float, step_time: float, baseline_step_time: float) -> float:
    """Wall-clock speedup: baseline time to the loss / the recipe's time (training steps only)."""
    return steps_speedup * baseline_step_time / step_time
