"""Plot a benchmark report (``optforge benchmark SPEC --json`` output) as two PNG panels.

Left: final val loss vs horizon (log steps) per arm, mean with 95 % CI bars. Right: speedup in
steps vs the tuned baseline per arm and horizon, with the bootstrap CI; censored points (the
baseline never reached that loss) are drawn as upward triangles at their lower bound.

    python bench/plot_benchmark.py bench/results/benchmark_shakespeare.json docs/img/benchmark_shakespeare.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _arms(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    arms: dict[str, list[dict[str, Any]]] = {}
    for cell in sorted(report["cells"], key=lambda c: (c["arm"], c["horizon"])):
        if cell["mean"] is not None:
            arms.setdefault(cell["recipe"], []).append(cell)
    return arms


def plot(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (name, cells) in enumerate(_arms(report).items()):
        hs = [c["horizon"] for c in cells]
        means = [c["mean"] for c in cells]
        err = [
            [c["mean"] - c["ci95"][0] for c in cells],
            [c["ci95"][1] - c["mean"] for c in cells],
        ]
        label = f"{name} (baseline)" if cells[0]["arm"] == 0 else name
        left.errorbar(hs, means, yerr=err, marker="o", capsize=3, label=label)
        sp = [(c["horizon"] * (1 + 0.03 * i), c["speedup"]) for c in cells if c["speedup"]]
        for h, s in sp:
            marker = "^" if s["censored"] == ">" else "o"
            lo, hi = s["ci95"]
            right.errorbar([h], [s["steps"]], yerr=[[s["steps"] - lo], [hi - s["steps"]]],
                           marker=marker, capsize=3, color=f"C{i}")  # fmt: skip
        right.plot([h for h, _ in sp], [s["steps"] for _, s in sp], color=f"C{i}", alpha=0.5)
    left.set(xscale="log", xlabel="horizon (steps)", ylabel="final val loss (mean, 95% CI)")
    right.axhline(1.0, color="grey", lw=1, ls="--")
    right.set(xscale="log", xlabel="horizon (steps)", ylabel="speedup in steps vs baseline")
    left.legend(fontsize=8)
    seeds = ", ".join(map(str, report["seeds"]))
    budget = report["tuning"].get("budget")
    fig.suptitle(
        f"{report['workload']}: every arm tuned with {budget} trials per horizon, "
        f"confirmed on seeds {seeds} (▲ = lower bound)",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="JSON from optforge benchmark --json")
    parser.add_argument("out", type=Path, help="PNG to write")
    args = parser.parse_args()
    plot(json.loads(args.report.read_text()), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
