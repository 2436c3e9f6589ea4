"""Pure chart builders of the analysis plots, timestamps and CSV (no server)."""

from __future__ import annotations

import csv
import io
import math
import statistics
from datetime import UTC, datetime

from api.web.analysis import band_series, importance_plot, parallel_plot, slice_plots
from api.web.csv_export import csv_response, trial_csv
from api.web.render import fmt_params, fmt_time

TRIALS = [
    {"number": 0, "status": "complete", "values": [3.0, 8.0],
     "params": {"lr": 1e-3, "norms": "adam", "state_bits": 32}},
    {"number": 1, "status": "complete", "values": [2.0, 1.0],
     "params": {"lr": 1e-2, "norms": "sign", "state_bits": 32, "beta": 0.8}},
    {"number": 2, "status": "complete", "values": [2.5, 4.0],
     "params": {"lr": 1e-1, "norms": "sign", "state_bits": 32, "beta": 0.9}},
    {"number": 3, "status": "pruned", "values": None, "params": {"lr": 0.5, "norms": "adam"}},
]  # fmt: skip


def test_parallel_coordinates_scale_every_axis_to_unit() -> None:
    spec = parallel_plot(TRIALS, ["val_loss", "state_bytes_per_param"])
    names = [a["name"] for a in spec["axes"]]
    assert names == ["beta", "lr", "norms", "val_loss", "state_bytes_per_param"]  # fixed: gone
    assert [line["label"] for line in spec["lines"]] == ["trial 0", "trial 1", "trial 2"]
    lr = [line["values"][1] for line in spec["lines"]]
    assert lr == [0.0, 0.5, 1.0]  # log axis: 1e-3, 1e-2, 1e-1
    assert [line["values"][2] for line in spec["lines"]] == [0.0, 1.0, 1.0]  # adam | sign
    assert spec["lines"][0]["values"][0] is None  # no beta: a gap, not a made-up value
    assert [line["values"][0] for line in spec["lines"][1:]] == [0.0, 1.0]
    assert [line["score"] for line in spec["lines"]] == [1.0, 0.0, 0.5]  # colour by val_loss
    assert spec["lines"][2]["raw"][1] == "0.1"


def test_slices_and_importance() -> None:
    slices = {s["name"]: s["spec"] for s in slice_plots(TRIALS, ["val_loss"])}
    assert set(slices) == {"beta", "lr", "norms"}
    assert slices["norms"]["x_labels"] == ["adam", "sign"]
    assert slices["norms"]["series"][0]["points"] == [[0, 3.0], [1, 2.0], [1, 2.5]]
    assert [p[0] for p in slices["beta"]["series"][0]["points"]] == [0.8, 0.9]  # where set
    assert slices["lr"]["x_log"] is True
    bars = importance_plot({"val_loss": {"lr": 0.2, "norms": 0.8}, "sbpp": {"lr": 1.0}})
    assert bars["labels"] == ["norms", "lr"]  # most important first
    assert bars["series"][1] == {"label": "sbpp", "values": [0.0, 1.0]}
    assert importance_plot({})["labels"] == []


def test_seed_bands_mean_and_sample_std() -> None:
    a = [{"step": 10, "val": 3.0}, {"step": 20, "val": 2.0}]
    b = [{"step": 10, "val": 3.4}, {"step": 20, "val": 2.2}, {"step": 30, "val": 1.0}]
    mean, upper, lower = band_series("adamw", [a, b], "val")
    assert mean["label"] == "adamw val (mean of 2)" and [p[0] for p in mean["points"]] == [10, 20]
    sd = statistics.stdev([3.0, 3.4])
    assert math.isclose(mean["points"][0][1], 3.2)
    assert math.isclose(upper["points"][0][1], 3.2 + sd) and upper["band"] == "upper"
    assert math.isclose(lower["points"][0][1], 3.2 - sd) and lower["band"] == "lower"
    single = band_series("sinkgd", [a], "val")
    assert len(single) == 1 and single[0]["label"] == "sinkgd val"  # one seed: no band


def test_times_are_utc_with_z_and_params_are_short() -> None:
    naive = datetime(2026, 12, 1, 20, 5, 12, 123456)  # SQLite gives naive UTC
    assert fmt_time(naive) == "2026-12-01 20:05:12Z"
    assert fmt_time(naive.replace(tzinfo=UTC)) == "2026-12-01 20:05:12Z"
    assert fmt_time("2026-12-01T20:05:12.5+00:00") == "2026-12-01 20:05:12Z"
    assert fmt_time(None) == "—"
    assert fmt_params({"lr": 0.0123456789, "norms": ["row", "col"], "rank": None}) == [
        ("lr", "0.01235"), ("norms", "row>col"), ("rank", "none")]  # fmt: skip


def test_trial_csv_has_a_column_per_objective_and_parameter() -> None:
    trials = [{**t, "recipe_hash": "ab" * 16, "runs": [{"id": 7}], "failure_reason": None,
               "pruned_step": None} for t in TRIALS]  # fmt: skip
    rows, cols = trial_csv(trials, ["val_loss", "state_bytes_per_param"])
    resp = csv_response(rows, cols, "t.csv")
    assert resp.headers["content-disposition"] == 'attachment; filename="t.csv"'
    parsed = list(csv.DictReader(io.StringIO(bytes(resp.body).decode())))
    assert [r["number"] for r in parsed] == ["0", "1", "2", "3"]
    assert parsed[1]["val_loss"] == "2.0" and parsed[1]["param_norms"] == "sign"
    assert parsed[3]["val_loss"] == "" and parsed[0]["run_ids"] == "7"
