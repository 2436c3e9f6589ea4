"""Benchmark statistics (records/bench_stats.py) against scipy and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from records.bench_stats import mean_ci, monotone, speedup, steps_to_reach, welch_p

BASE = {100: [3.0, 3.1, 2.9], 300: [2.5, 2.6, 2.4], 900: [2.0, 2.1, 1.9]}


def test_mean_ci_is_the_t_interval() -> None:
    x = [1.0, 2.5, 2.0, 4.0]
    mean, (lo, hi) = mean_ci(x)
    want = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert mean == pytest.approx(np.mean(x))
    assert (lo, hi) == pytest.approx(want)
    assert mean_ci([1.0])[1] == (-math.inf, math.inf)


def test_welch_matches_scipy_and_handles_zero_variance() -> None:
    a, b = [1.0, 2.0, 3.5], [2.0, 3.0, 4.0, 5.5]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert welch_p([1.0, 1.0], [2.0, 2.0]) == 0.0
    assert welch_p([1.0], [2.0, 3.0]) is None


def test_steps_to_reach_interpolates_in_log_steps() -> None:
    curve = [(100, 3.0), (300, 2.5), (900, 2.0)]
    assert steps_to_reach(2.5, curve).steps == pytest.approx(300)
    mid = steps_to_reach(2.25, curve)  # halfway in loss between 300 and 900: geometric mean
    assert mid.steps == pytest.approx(math.sqrt(300 * 900)) and mid.censored is None
    assert steps_to_reach(1.5, curve).censored == ">"  # better than the baseline ever got
    assert steps_to_reach(1.5, curve).steps == 900  # the bound, never extrapolated
    assert steps_to_reach(3.5, curve).censored == "<"
    assert steps_to_reach(3.0, curve).censored is None  # exactly the first point


def test_monotone_curve_takes_the_running_minimum() -> None:
    assert monotone([(300, 2.7), (100, 3.0), (900, 2.8)]) == [(100, 3.0), (300, 2.7), (900, 2.7)]


def test_speedup_of_the_baseline_itself_is_one() -> None:
    for horizon, losses in BASE.items():
        sp = speedup(losses, horizon, BASE)
        assert sp.steps == pytest.approx(1.0)
        assert sp.ci95[0] <= 1.0 <= sp.ci95[1]


def test_speedup_three_times_fewer_steps_and_censoring() -> None:
    sp = speedup([2.0, 2.1, 1.9], 300, BASE)  # reaches the baseline's 900-step loss in 300
    assert sp.steps == pytest.approx(3.0)
    better = speedup([1.5, 1.6, 1.4], 300, BASE)
    assert better.censored == ">" and better.steps == pytest.approx(3.0)  # a lower bound
    assert speedup([2.0, 2.1, 1.9], 300, BASE) == sp  # fixed bootstrap seed: reproducible
