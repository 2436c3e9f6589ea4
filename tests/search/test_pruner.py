"""Rung-based successive-halving pruner: the pure decision function."""

from __future__ import annotations

import math

from search.pruner import (
    PeerRun,
    current_rung,
    decide,
    rungs_for,
    same_memory_class,
    sha_should_prune,
    value_at,
)


def test_rungs_and_values() -> None:
    assert rungs_for(300) == [33, 100]
    assert rungs_for(30) == [3, 10]
    assert current_rung(5, [3, 10]) == 3 and current_rung(2, [3, 10]) is None
    assert value_at([(2, 5.0), (4, 4.0), (8, 3.0)], 5) == 4.0
    assert value_at([(8, 3.0)], 5) is None


def test_sha_keeps_top_third_and_needs_peers() -> None:
    assert not sha_should_prune(3.0, [1.0])  # too few peers
    assert sha_should_prune(3.0, [1.0, 2.0])  # n=3 keeps 1: 3.0 is out
    assert not sha_should_prune(0.5, [1.0, 2.0])
    assert not sha_should_prune(1.5, [1.0, 2.0, 3.0, 4.0, 5.0])  # n=6 keeps 2
    assert sha_should_prune(math.nan, [])
    assert sha_should_prune(2.0, [math.nan, 1.0])


def test_memory_classes() -> None:
    assert same_memory_class(8.0, 4.0)
    assert not same_memory_class(8.0, 0.5)
    assert same_memory_class(None, 0.5)


def _curve(base: float, steps: int = 30, every: int = 3) -> tuple[tuple[int, float], ...]:
    return tuple((s, base + 5.0 / s) for s in range(every, steps + 1, every))


def test_decide_prunes_clearly_worse_never_the_best() -> None:
    bases = [1.0, 1.5, 2.0, 4.0, 6.0, 8.0]
    curves = {b: _curve(b) for b in bases}
    pruned = []
    for b in bases:
        peers = [PeerRun(curves[o], 2.0) for o in bases if o != b]
        stopped = next(
            (s for s, v in curves[b] if decide(s, v, curves[b], 2.0, peers, steps=30)), None
        )
        if stopped is not None:
            pruned.append(b)
    assert 1.0 not in pruned  # the best is never pruned
    assert {6.0, 8.0} <= set(pruned)  # clearly worse ones are


def test_decide_compares_only_similar_memory() -> None:
    low_mem = _curve(3.0)
    big = [PeerRun(_curve(1.0), 8.0), PeerRun(_curve(1.1), 8.0)]
    assert not decide(12, value_at(low_mem, 12) or 0, low_mem, 0.5, big, steps=30)
    small = [PeerRun(_curve(1.0), 0.5), PeerRun(_curve(1.1), 0.5)]
    assert decide(12, value_at(low_mem, 12) or 0, low_mem, 0.5, small, steps=30)


def test_decide_before_first_rung_never_prunes() -> None:
    peers = [PeerRun(_curve(1.0)), PeerRun(_curve(1.0))]
    assert not decide(2, 100.0, [], None, peers, steps=30)


def test_rungs_move_to_evaluation_steps() -> None:
    assert rungs_for(300, eval_every=50) == [50, 100]
    assert rungs_for(120, eval_every=50) == [50]
    assert rungs_for(40, eval_every=25) == [25]
    assert rungs_for(30, eval_every=50) == []  # no evaluation before the end: never pruned
    curve = _curve(8.0, steps=120, every=50)
    peers = [PeerRun(_curve(1.0, 120, 50)), PeerRun(_curve(1.1, 120, 50))]
    assert decide(50, value_at(curve, 50) or 0, curve, None, peers, steps=120, eval_every=50)


def test_decide_never_prunes_a_run_at_its_final_evaluation() -> None:
    peers = [PeerRun(_curve(1.0)), PeerRun(_curve(1.1))]
    bad = _curve(8.0)
    assert decide(20, value_at(bad, 20) or 0, bad, None, peers, steps=30)  # mid-run: pruned
    assert not decide(30, value_at(bad, 30) or 0, bad, None, peers, steps=30)  # finished: kept
