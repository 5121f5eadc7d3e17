"""Charts (matplotlib, the optional extra `bench`): PNG and SVG side by side.

Each function writes `<out>/<stem>.png` and `.svg` and returns the stem, or returns None
when there is nothing to draw. Without matplotlib, `available()` is False and the reports
say how to get the charts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

INSTALL_HINT = "charts need matplotlib: pip install -e '.[bench]'"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False, "svg.hashsalt": "redis-mesh-lab"})
    return plt


def _save(fig: Any, out: Path, stem: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)
    fig.savefig(out / f"{stem}.svg", metadata={"Date": None})
    _pyplot().close(fig)
    return stem


def ratio_bars(out: Path, stem: str, title: str, categories: Sequence[str],
               series: Mapping[str, Sequence[tuple[float, float, float] | None]]) -> str | None:
    """Grouped bars: per category, one bar per series at the median with a min-max whisker.

    series: name -> per category (median, min, max) or None (not measured).
    """
    if not categories or not series:
        return None
    plt = _pyplot()
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(min(11.0, max(6.5, 0.3 * len(categories) * len(series))),
                                    4.4))
    for index, (name, values) in enumerate(series.items()):
        xs, heights, lows, highs = [], [], [], []
        for position, value in enumerate(values):
            if value is None:
                continue
            median, low, high = value
            xs.append(position - 0.4 + width * (index + 0.5))
            heights.append(median)
            lows.append(median - low)
            highs.append(high - median)
        bars = ax.bar(xs, heights, width * 0.92, label=name, yerr=[lows, highs], capsize=2,
                      error_kw={"elinewidth": 0.8})
        # the median, on a white patch so the whisker through it does not hide it
        for label in ax.bar_label(bars, fmt="%.2f", fontsize=6 if len(series) > 2 else 7,
                                  label_type="center"):
            label.set_bbox({"facecolor": "white", "edgecolor": "none", "pad": 0.6})
    ax.axhline(1.0, color="0.3", linewidth=0.8, linestyle="--")
    ax.text(len(categories) - 0.45, 1.0, "direct = 1.0", fontsize=7, va="bottom", ha="right",
            color="0.3")
    ax.set_xticks(range(len(categories)), categories, rotation=20 if len(categories) > 6 else 0)
    ax.set_ylabel("throughput through the proxy / direct (median, min-max)")
    ax.set_ylim(0, max(1.15, ax.get_ylim()[1] * 1.08))
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=min(4, len(series)), loc="upper center",
              bbox_to_anchor=(0.5, -0.14), frameon=False)
    return _save(fig, out, stem)


def latency_bars(out: Path, stem: str, title: str, categories: Sequence[str],
                 series: Mapping[str, Sequence[float]]) -> str | None:
    """Grouped bars of latency percentiles (ms), log scale: e.g. proxy p50, direct p50, ..."""
    if not categories or not series:
        return None
    plt = _pyplot()
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(min(10.0, max(6.5, 0.3 * len(categories) * len(series))), 4))
    colours = ["#1f77b4", "#aec7e8", "#d62728", "#ff9896", "#2ca02c", "#98df8a"]
    for index, (name, values) in enumerate(series.items()):
        xs = [position - 0.4 + width * (index + 0.5) for position in range(len(values))]
        ax.bar(xs, values, width * 0.92, label=name, color=colours[index % len(colours)])
    ax.set_yscale("log")
    ax.set_xticks(range(len(categories)), categories)
    ax.set_ylabel("latency, ms (log scale; median over repetitions)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=min(4, len(series)), loc="upper center",
              bbox_to_anchor=(0.5, -0.1), frameon=False)
    return _save(fig, out, stem)


def samples_chart(out: Path, stem: str, title: str, unit: str,
                  samples: Mapping[str, Sequence[float]], *,
                  target: float | None = None) -> str | None:
    """One column per name: each sample as a dot, the median as a bar."""
    samples = {name: values for name, values in samples.items() if values}
    if not samples:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.5, 1.4 * len(samples) + 2), 3.5))
    for position, (_name, values) in enumerate(samples.items()):
        ordered = sorted(values)
        median = ordered[len(ordered) // 2] if len(ordered) % 2 else (
            ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
        ax.bar(position, median, 0.5, color="#aec7e8")
        ax.scatter([position] * len(values), values, color="#1f77b4", s=14, zorder=3)
        ax.text(position + 0.28, median, f"median {median:.2f} {unit}", ha="left",
                va="center", fontsize=8)
    if target is not None:
        ax.axhline(target, color="#d62728", linewidth=0.8, linestyle="--")
        # at the left edge: the medians' labels stand right of their bars, where a median
        # near the target would cover this one
        ax.text(-0.58, target, f"target {target:g} {unit}", fontsize=7,
                color="#d62728", va="bottom", ha="left")
    ax.set_xticks(range(len(samples)), list(samples))
    ax.set_xlim(-0.6, len(samples) - 0.1)
    ax.set_ylabel(unit)
    ax.set_ylim(0, max(ax.get_ylim()[1], (target or 0) * 1.15))
    ax.set_title(title)
    return _save(fig, out, stem)
