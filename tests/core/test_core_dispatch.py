"""core.broker.dispatch_runs: sends by name, then stamps dispatched_at in the caller's session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def run_ids(data_dir: Path) -> list[int]:
    from core.db import session_scope
    from core.models import Recipe, Run
    from migrations.runner import upgrade

    upgrade()
    with session_scope() as session:
        recipe = Recipe(hash="h" * 32, name="r", canonical={"lr": 0.1})
        session.add(recipe)
        session.flush()
        runs = [
            Run(recipe_id=recipe.id, workload="synthetic-lm", steps=5, seed=s, lr=0.1)
            for s in range(3)
        ]
        session.add_all(runs)
        session.flush()
        return [r.id for r in runs]


def test_sent_runs_are_stamped_and_a_failed_send_is_left_to_the_reaper(
    run_ids: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.broker
    from core.db import session_scope
    from core.models import Run

    sent: list[tuple[int, str]] = []

    def send(run_id: int, queue: str = "cpu") -> None:
        if run_id == run_ids[1]:
            raise ConnectionError("broker down")
        sent.append((run_id, queue))

    monkeypatch.setattr(core.broker, "send_run", send)
    first, lost, third = run_ids
    with session_scope() as session:
        done = core.broker.dispatch_runs(session, [(first, "cpu"), (lost, "cpu"), (third, "gpu")])
    assert done == [first, third] and sent == [(first, "cpu"), (third, "gpu")]
    with session_scope() as session:
        stamped = {r.id: r.dispatched_at for r in session.query(Run).all()}
    assert stamped[first] is not None and stamped[third] is not None and stamped[lost] is None
