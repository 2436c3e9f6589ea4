"""optuna-dashboard on the study storage speaks optforge: metric names, learning curves, links.

A finished study (real scheduler + Optuna, runs completed by the synthetic executor of
test_scheduler) is read back through optuna-dashboard's own JSON API (its WSGI app on the
same storage) and through ``optuna`` itself.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from test_scheduler import CRAFTED_SPACE, drive, new_study, trials_of

from core.models import Base

OBJECTIVES = ["val_loss", "state_bytes_per_param"]


@pytest.fixture
def finished_study(data_dir: Path) -> int:
    from core.db import get_engine

    Base.metadata.create_all(get_engine())
    sid = new_study(space=CRAFTED_SPACE, steps=12, n_trials=4, parallelism=2, seeds=[0, 1],
                    sampler="random", seed=3, pruning=False)  # fmt: skip
    drive(sid)
    return sid


def _optuna_study(study_id: int):  # type: ignore[no-untyped-def]
    import optuna

    from core.config import get_settings
    from core.db import session_scope
    from core.models import SearchStudy

    with session_scope() as s:
        name = s.get(SearchStudy, study_id).optuna_study_name
    return optuna.load_study(study_name=name, storage=get_settings().optuna_storage_url)


def test_optuna_sees_metric_names_curves_and_run_links(finished_study: int) -> None:
    study = _optuna_study(finished_study)
    assert study.metric_names == OBJECTIVES
    ours = {t.number: t for t in trials_of(finished_study)}
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        mine = ours[t.number]
        run_ids = sorted(r.id for r in mine.runs)
        assert t.user_attrs["run_id"] == run_ids[0] and t.user_attrs["run_ids"] == run_ids
        assert t.user_attrs["run_url"].endswith(f"/runs/{run_ids[0]}")
        assert t.user_attrs["optforge"] == f"study {finished_study} / trial {t.number}"
        assert len(t.user_attrs["recipe_hash"]) == 32
        assert t.user_attrs["recipe_url"].endswith(f"/recipes/{t.user_attrs['recipe_hash']}")
        # the synthetic executor evaluates every 3 steps: 3, 6, 9, 12 (mean over 2 seeds)
        assert sorted(t.intermediate_values) == [3, 6, 9, 12]
        assert math.isclose(t.intermediate_values[12], t.values[0])


def test_optuna_dashboard_api_shows_them(finished_study: int) -> None:
    pytest.importorskip("optuna_dashboard")
    import httpx
    from optuna_dashboard import wsgi

    from core.config import get_settings

    study = _optuna_study(finished_study)
    app = wsgi(get_settings().optuna_storage_url)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://dash") as client:
        listed = client.get("/api/studies").json()["study_summaries"]
        sid = next(s["study_id"] for s in listed if s["study_name"] == study.study_name)
        detail = client.get(f"/api/studies/{sid}").json()
    assert detail["objective_names"] == OBJECTIVES
    assert detail["has_intermediate_values"] is True
    assert {a["key"] for a in detail["union_user_attrs"]} >= {"run_id", "run_url", "recipe_hash"}
    first = detail["trials"][0]
    attrs = {a["key"]: a["value"] for a in first["user_attrs"]}
    assert attrs["run_url"].startswith("http://") and "/runs/" in attrs["run_url"]
    assert [p["step"] for p in first["intermediate_values"]] == [3, 6, 9, 12]


def test_dashboard_command_finds_the_venvs_script() -> None:
    from optforge.cli.search_cmds import dashboard_command

    beside = Path(sys.executable).parent / "optuna-dashboard"
    found = dashboard_command()
    if beside.is_file():
        assert found == str(beside)  # found even when the venv's bin is not on PATH
    else:
        assert found is None or Path(found).name == "optuna-dashboard"
