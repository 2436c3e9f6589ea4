"""Print a benchmark report (``optforge benchmark SPEC --json`` output) as a Markdown table.

One row per (horizon, arm), the same cells and formatting as the CLI's table, for docs/results.md:

    python bench/benchmark_markdown.py bench/results/benchmark_shakespeare.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from optforge.cli.bench_cmds import ci_text, speedup_text

COLUMNS = (
    "horizon",
    "recipe",
    "final val loss, mean ± 95 % CI half-width",
    "seeds' losses",
    "p (Welch) vs AdamW",
    "speedup in steps [95 % CI]",
    "time speedup",
    "step time × AdamW's",
    "state B/param",
    "tuned lr",
)


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def row(cell: dict[str, Any]) -> list[str]:
    p = cell.get("p_value")
    best = cell["tuning"].get("best") or {}
    censor = str((cell.get("speedup") or {}).get("censored") or "")
    return [
        str(cell["horizon"]),
        cell["recipe"] + (" (baseline)" if cell["arm"] == 0 else ""),
        ci_text(cell),
        ", ".join(f"{v:.3f}" for v in cell.get("final_val_loss") or []),
        "–" if p is None else f"{p:.2g}" + (" (sig.)" if cell.get("significant") else ""),
        speedup_text(cell.get("speedup")),
        censor + _num(cell.get("time_speedup"), ".2f"),
        _num(cell.get("step_time_ratio"), ".2f"),
        _num(cell.get("state_bytes_per_param"), ".2f"),
        _num(best.get("lr"), ".2e"),
    ]


def markdown(report: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for cell in sorted(report["cells"], key=lambda c: (c["horizon"], c["arm"])):
        lines.append("| " + " | ".join(row(cell)) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="JSON from optforge benchmark --json")
    args = parser.parse_args()
    print(markdown(json.loads(args.report.read_text())))


if __name__ == "__main__":
    main()
