"""Reproducibility: the median ratios of two ProxyOverhead runs, case by case.

    python -m lab.bench.compare reports/benchmarks.json other/benchmarks.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TOLERANCE = 0.10  # the goal: median ratios within +-10% between two runs


def _ratios(figures: dict[str, Any]) -> dict[tuple[bool, int, str, int], float]:
    return {(config["mirror"], config["envoy_concurrency"], case["test"], case["pipeline"]):
            case["ratio_median"]
            for config in figures.get("ProxyOverhead", []) for case in config["cases"]}


def compare(this: dict[str, Any], other: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (configuration, case) measured in both: both medians, relative change."""
    mine, theirs = _ratios(this), _ratios(other)
    rows = []
    for key in mine:
        if key not in theirs:
            continue
        mirror, concurrency, test, pipeline = key
        change = round((mine[key] - theirs[key]) / theirs[key], 3)
        rows.append({"mirror": mirror, "envoy_concurrency": concurrency, "test": test,
                     "pipeline": pipeline, "this": mine[key], "other": theirs[key],
                     "change_pct": round(100 * change, 1),
                     "within": abs(change) <= TOLERANCE})
    return rows


def markdown(rows: list[dict[str, Any]], this_date: str, other_date: str) -> str:
    if not rows:
        return ""
    within = sum(r["within"] for r in rows)
    lines = [f"### Reproducibility: this run vs the run of {other_date}", "",
             f"{within} of {len(rows)} median ratios within +-{TOLERANCE:.0%} "
             f"(this run: {this_date}).", "",
             "| configuration | case | this run | other run | change |", "|---|---|---|---|---|"]
    for r in rows:
        flag = "" if r["within"] else " **(outside)**"
        lines.append(f"| mirror {'on' if r['mirror'] else 'off'}, --concurrency "
                     f"{r['envoy_concurrency']} | {r['test'].replace(' (10 keys)', '')} "
                     f"P{r['pipeline']} | {r['this']:.2f} | {r['other']:.2f} | "
                     f"{r['change_pct']:+.1f}%{flag} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    this, other = (json.loads(Path(p).read_text()) for p in argv[:2])
    rows = compare(this, other)
    print(markdown(rows, this.get("date", "?"), other.get("date", "?")))
    return 0 if rows and all(r["within"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
