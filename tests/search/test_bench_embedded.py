"""A small benchmark on synthetic-lm through the embedded default (CLI, scheduler, worker body).

The arms are the baseline (adamw), the very same recipe again, and sinkgd, so the report must
give the identical arm a speedup of about 1 with an interval containing 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy import stats

SPEC = {
    "workload": "synthetic-lm",
    "baseline": "adamw",
    "recipes": ["adamw", "sinkgd"],
    "horizons": [10, 30],
    "seeds": [1, 2, 3],
    "tuning": {"budget": 2, "seed": 0, "sampler": "tpe"},
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the benchmark once with ``optforge benchmark SPEC --json --workers 1``."""
    from settings_reset import reset_settings_caches
    from typer.testing import CliRunner

    from optforge.cli import app

    root = tmp_path_factory.mktemp("bench")
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTFORGE_DATA_DIR", str(root / "data"))
        for var in ("OPTFORGE_DATABASE_URL", "OPTFORGE_BROKER_URL", "OPTFORGE_OPTUNA_STORAGE_URL"):
            mp.delenv(var, raising=False)
        reset_settings_caches()
        result = CliRunner().invoke(app, ["benchmark", str(spec), "--json", "--workers", "1"])
        assert result.exit_code == 0, result.output
        yield {"report": json.loads(result.stdout), "root": root}
        reset_settings_caches()


def _runs(root: Path) -> list[dict[str, Any]]:
    import sqlite3

    con = sqlite3.connect(root / "data" / "optforge.db")
    con.row_factory = sqlite3.Row
    rows = con.execute(
        "SELECT r.*, c.arm, c.horizon AS cell_horizon FROM runs r "
        "JOIN benchmark_cells c ON r.benchmark_cell_id = c.id"
    ).fetchall()
    con.close()
    return [dict(r) for r in rows]


def test_every_cell_got_the_same_tuning_budget(bench: dict[str, Any]) -> None:
    rep = bench["report"]
    assert rep["status"] == "completed"
    assert len(rep["cells"]) == 3 * 2
    for cell in rep["cells"]:
        assert cell["phase"] == "done"
        assert cell["tuning"]["trials"] == cell["tuning"]["told"] == SPEC["tuning"]["budget"]
    tune = [r for r in _runs(bench["root"]) if r["bench_phase"] == "tune"]
    per_cell: dict[tuple[int, int], int] = {}
    for r in tune:
        key = (r["arm"], r["cell_horizon"])
        per_cell[key] = per_cell.get(key, 0) + 1
    assert set(per_cell.values()) == {2}, per_cell
    assert all(r["steps"] == r["cell_horizon"] for r in tune)  # re-tuned at its own horizon


def test_confirmation_seeds_are_disjoint_from_the_tuning_seed(bench: dict[str, Any]) -> None:
    runs = _runs(bench["root"])
    assert {r["seed"] for r in runs if r["bench_phase"] == "tune"} == {0}
    confirm = [r for r in runs if r["bench_phase"] == "confirm"]
    assert {r["seed"] for r in confirm} == {1, 2, 3}
    assert len(confirm) == 6 * 3


def test_statistics_recomputed_from_stored_runs_match_the_report(bench: dict[str, Any]) -> None:
    runs = [r for r in _runs(bench["root"]) if r["bench_phase"] == "confirm"]
    by_cell: dict[tuple[int, int], list[float]] = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        by_cell.setdefault((r["arm"], r["cell_horizon"]), []).append(r["final_val_loss"])
    for cell in bench["report"]["cells"]:
        losses = by_cell[(cell["arm"], cell["horizon"])]
        assert cell["final_val_loss"] == pytest.approx(losses)
        assert cell["mean"] == pytest.approx(np.mean(losses))
        lo, hi = stats.t.interval(0.95, 2, loc=np.mean(losses), scale=stats.sem(losses))
        assert cell["ci95"] == pytest.approx([lo, hi])
        if cell["arm"] == 0:
            assert cell["p_value"] is None
            continue
        base = by_cell[(0, cell["horizon"])]
        if np.std(base) == 0 and np.std(losses) == 0:
            continue
        want = stats.ttest_ind(losses, base, equal_var=False).pvalue
        assert cell["p_value"] == pytest.approx(want)


def test_baseline_and_identical_arm_have_speedup_one(bench: dict[str, Any]) -> None:
    cells = bench["report"]["cells"]
    for cell in (c for c in cells if c["arm"] in (0, 1)):
        sp = cell["speedup"]
        assert sp["steps"] == pytest.approx(1.0, abs=1e-6), cell
        assert sp["ci95"][0] <= 1.0 <= sp["ci95"][1], cell
    twin = {c["horizon"]: c for c in cells if c["arm"] == 1}
    for cell in (c for c in cells if c["arm"] == 0):  # same space, seed and sampler: same pick
        assert twin[cell["horizon"]]["tuning"]["best"] == cell["tuning"]["best"]
        assert twin[cell["horizon"]]["recipe"] == "adamw#1"


def test_report_has_costs_and_the_confirmed_board_lists_it(bench: dict[str, Any]) -> None:
    from records.bench_stats import time_speedup

    for cell in bench["report"]["cells"]:
        assert cell["state_bytes_per_param"] > 0
        assert cell["step_time_s"] > 0 and cell["step_time_ratio"] > 0
        base_time = _base_time(bench, cell["horizon"])
        want = time_speedup(cell["speedup"]["steps"], cell["step_time_s"], base_time)
        assert cell["step_time_ratio"] == pytest.approx(cell["step_time_s"] / base_time)
        assert cell["time_speedup"] == pytest.approx(want)
        assert set(cell["tuning"]["best"]) >= {"lr", "weight_decay", "warmup_frac"}
    sink = [c for c in bench["report"]["cells"] if c["recipe"] == "sinkgd"]
    assert all("beta2" in c["tuning"]["axes"] for c in sink)  # its AdamW routes are tuned too


def _base_time(bench: dict[str, Any], horizon: int) -> float:
    """The baseline's mean step time at ``horizon`` (the reference of that horizon's cells)."""
    from core.workloads import get_workload

    runs = [
        r
        for r in _runs(bench["root"])
        if r["bench_phase"] == "confirm" and r["arm"] == 0 and r["steps"] == horizon
    ]
    tokens = get_workload("synthetic-lm").tokens_per_step
    assert len(runs) == 3
    return float(np.mean([tokens / r["tokens_per_s"] for r in runs]))


def test_markdown_and_plot_scripts_render_the_report(
    bench: dict[str, Any], tmp_path: Path
) -> None:
    """bench/benchmark_markdown.py and bench/plot_benchmark.py (what docs/results.md is made
    with) render every cell of a real report."""
    import importlib.util

    def load(name: str) -> Any:
        path = Path(__file__).parents[2] / "bench" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    table = load("benchmark_markdown").markdown(bench["report"]).splitlines()
    cells = bench["report"]["cells"]
    assert len(table) == 2 + len(cells)
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert sum("(baseline)" in line for line in table) == len({c["horizon"] for c in cells})
    png = tmp_path / "bench.png"
    load("plot_benchmark").plot(bench["report"], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_record_keeps_the_benchmark_out_of_the_database(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--no-record`` trains in a scratch directory: the JSON report comes back, and the
    embedded default's database never sees the benchmark or its runs."""
    from settings_reset import reset_settings_caches
    from typer.testing import CliRunner

    from optforge.cli import app

    for var in SCRATCH_VARS:  # recorded, so the scratch paths set by the command are undone
        monkeypatch.setenv(var, "unset-by-test")
        monkeypatch.delenv(var)
    spec = tmp_path / "spec.yaml"
    tiny = {**SPEC, "recipes": ["sinkgd"], "horizons": [5], "tuning": {"budget": 1, "seed": 0}}
    spec.write_text(yaml.safe_dump(tiny))
    args = ["benchmark", str(spec), "--json", "--workers", "1", "--no-record"]
    result = CliRunner().invoke(app, args)
    monkeypatch.undo()
    reset_settings_caches()
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "completed" and len(report["cells"]) == 2
    assert "kept in" in result.stderr
    assert not (data_dir / "optforge.db").exists()
    refused = CliRunner().invoke(app, [*args, "--resume", "1"])
    assert refused.exit_code == 2 and "drop --no-record" in refused.output


SCRATCH_VARS = (
    "OPTFORGE_DATABASE_URL",
    "OPTFORGE_OPTUNA_STORAGE_URL",
    "OPTFORGE_BROKER_URL",
    "OPTFORGE_CACHE_DIR",
)
