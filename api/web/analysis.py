"""Chart specs for analysis plots (pure functions of JSON-able rows; no DB, no optuna).

* ``parallel_plot``: parallel coordinates over the varying design axes of a study's complete
  trials plus its objectives (each axis scaled to [0, 1]; categorical axes evenly spaced);
* ``slice_plots``: the first objective against each varying parameter;
* ``importance_plot``: parameter importances per objective (computed by Optuna's fANOVA in
  ``search.study.param_importances``);
* ``band_series``: mean ± std over seeds of runs that differ only by seed (curves overlay).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

LOG_AXES = frozenset({"lr", "weight_decay"})


def finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _complete(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for t in trials if t["status"] == "complete" and t.get("values")]


def varying_params(trials: list[dict[str, Any]]) -> list[str]:
    """Parameter names with more than one distinct value over the trials (sorted)."""
    seen: dict[str, set[str]] = {}
    for t in trials:
        for k, v in (t.get("params") or {}).items():
            seen.setdefault(k, set()).add(repr(v))
    return sorted(k for k, vals in seen.items() if len(vals) > 1)


def axis(name: str, values: list[Any]) -> dict[str, Any]:
    """One axis: numeric (min, max, log) or categorical (sorted labels)."""
    present = [v for v in values if v is not None]
    if present and all(finite(v) for v in present):
        lo, hi = min(present), max(present)
        log = name in LOG_AXES and lo > 0
        return {"name": name, "kind": "num", "min": lo, "max": hi, "log": log}
    labels = sorted({fmt_value(v) for v in present})
    return {"name": name, "kind": "cat", "labels": labels}


def scale(ax: dict[str, Any], v: Any) -> float | None:
    """``v`` on axis ``ax`` as a number in [0, 1] (None: the trial has no such parameter)."""
    if v is None:
        return None
    if ax["kind"] == "cat":
        n = len(ax["labels"])
        return 0.5 if n < 2 else ax["labels"].index(fmt_value(v)) / (n - 1)
    lo, hi = ax["min"], ax["max"]
    if ax["log"]:
        lo, hi, v = math.log10(lo), math.log10(hi), math.log10(v)
    return 0.5 if hi == lo else (v - lo) / (hi - lo)


def fmt_value(v: Any) -> str:
    """Short text of a parameter value: 4 significant digits, lists joined by ``>``."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list | tuple):
        return ">".join(fmt_value(x) for x in v)
    return "none" if v is None else str(v)


def parallel_plot(trials: list[dict[str, Any]], objectives: list[str]) -> dict[str, Any]:
    """Parallel coordinates: one line per complete trial, coloured by the first objective."""
    done = _complete(trials)
    names = varying_params(done)
    columns = [[(t.get("params") or {}).get(n) for t in done] for n in names]
    columns += [[t["values"][i] for t in done] for i in range(len(objectives))]
    axes = [axis(n, col) for n, col in zip([*names, *objectives], columns, strict=True)]
    first = axes[len(names)] if done else None
    lines = []
    for j, t in enumerate(done):
        raw = [col[j] for col in columns]
        lines.append(
            {
                "label": f"trial {t['number']}",
                "values": [scale(ax, v) for ax, v in zip(axes, raw, strict=True)],
                "raw": [fmt_value(v) for v in raw],
                "score": scale(first, t["values"][0]) if first else 0.0,
            }
        )
    return {"kind": "parallel", "axes": axes, "lines": lines, "n_params": len(names)}


def slice_plots(trials: list[dict[str, Any]], objectives: list[str]) -> list[dict[str, Any]]:
    """One scatter per varying parameter: the first objective of each complete trial."""
    done = _complete(trials)
    out = []
    for name in varying_params(done):
        ax = axis(name, [(t.get("params") or {}).get(name) for t in done])
        pts = []
        for t in done:
            v = (t.get("params") or {}).get(name)
            if v is None or not finite(t["values"][0]):
                continue
            x = ax["labels"].index(fmt_value(v)) if ax["kind"] == "cat" else v
            pts.append([x, t["values"][0]])
        series = [{"label": objectives[0], "points": pts, "scatter": True}]
        spec = {"kind": "curves", "x_label": name, "y_label": objectives[0], "series": series,
                "x_log": bool(ax.get("log"))}  # fmt: skip
        if ax["kind"] == "cat":
            spec["x_labels"] = ax["labels"]
        out.append({"name": name, "spec": spec})
    return out


def importance_plot(importances: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Horizontal bars: parameters (most important first) x one bar per objective."""
    if not importances:
        return {"kind": "bars", "labels": [], "series": []}
    first = next(iter(importances.values()))
    labels = sorted(first, key=lambda k: -first[k])
    series = [
        {"label": obj, "values": [round(scores.get(k, 0.0), 4) for k in labels]}
        for obj, scores in importances.items()
    ]
    return {"kind": "bars", "labels": labels, "series": series, "x_label": "importance (fANOVA)"}


def band_series(label: str, curves: list[list[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    """Mean line and ± std band of ``key`` over seeds, at the steps every curve has.

    One curve: a plain line (no band, no "± 0").
    """
    by_step: dict[int, list[float]] = {}
    for points in curves:
        for p in points:
            if finite(p.get(key)):
                by_step.setdefault(p["step"], []).append(float(p[key]))
    full = {s: v for s, v in sorted(by_step.items()) if len(v) == len(curves)}
    if not full:
        return []
    mean = [[s, statistics.fmean(v)] for s, v in full.items()]
    name = f"{label} {key}" if len(curves) == 1 else f"{label} {key} (mean of {len(curves)})"
    out: list[dict[str, Any]] = [
        {"label": name, "points": mean, "dashed": key == "train", "group": label}
    ]
    if len(curves) > 1:
        std = [statistics.stdev(v) for v in full.values()]
        upper = [[s, m + d] for (s, m), d in zip(mean, std, strict=True)]
        lower = [[s, m - d] for (s, m), d in zip(mean, std, strict=True)]
        out += [
            {"label": f"{label} {key} ± std", "points": upper, "band": "upper", "group": label},
            {"label": f"{label} {key} - std", "points": lower, "band": "lower", "group": label},
        ]
    return out
