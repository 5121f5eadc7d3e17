"""reports/benchmarks.md and its charts, from the figures `benchmarks/run.py` collects."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from lab.bench import charts as charts_mod
from lab.bench import overhead, timing

CHARTS_DIR = "charts"

DIRECT_PATH = (
    "**What is compared.** *Proxy*: `redis-benchmark -h <proxy> -p <port>` (redis-benchmark's "
    "default: one client thread; the 50 connections go to Envoy, which routes each command to "
    "the key's shard: GETs to the replica (read_policy REPLICA), writes to the master and, with "
    "mirroring on, also to redis-mirror). *Direct*: `redis-benchmark --cluster` against one "
    "master: it reads CLUSTER NODES, spreads the 50 connections over the 3 masters and runs one "
    "client thread per master (3 threads), every request sent straight to the owning master "
    "(no replica reads, no mirror). In cluster mode redis-benchmark puts a hash tag of a slot "
    "of the connection's master in every key, so **MSET** direct writes its 10 keys to one "
    "slot, while through the proxy the 10 keys of an MSET fall on different slots and Envoy "
    "splits the command per shard and joins the replies (a cluster client cannot send such an "
    "MSET at all). The MSET ratio therefore includes the proxy's fan-out. Keys are spread "
    "with `-r` over the keyspace; GET runs right after SET on the same path so most GETs hit. "
    "The ratio of a repetition is proxy rps / direct rps of two adjacent runs (order "
    "alternating between repetitions); each run lasts at least the minimum duration, its "
    "request count sized by a calibration run. **Throughput** comes from each path's exact "
    "clock. The proxy path has one client thread: its summary's clock stops at the last "
    "reply, to the millisecond. The direct path's 3 client threads stop only at their next "
    "250 ms tick, so its summary clock is rounded up to 250 ms and would understate it by up "
    "to 10 % on a 2.5 s run: there the last progress tick's `overall` figure (requests "
    "finished since the start / time since the start) is taken, unless the summary's clock "
    "rules it out (a run's `clock` then says `summary (ticks implausible)`). Latencies are "
    "the summary's (its histogram counts every request)."
)

LIMITS = (
    "**What limits reproducibility.** The machine has 2 cores shared by redis-benchmark, "
    "Envoy, seven redis-server processes and, on the project's machines, other people's "
    "labs: a ratio moves when the load does, which interleaving and the median soften but "
    "cannot remove (the spread column shows how much); a case whose pairs disagree gets more "
    "repetitions until its median is pinned down (the *reps* and *+-95%* columns). Envoy with "
    "`--concurrency 2` competes with the load generator for the same two cores. Its two "
    "workers share one accept socket (the lab's listeners do not use SO_REUSEPORT); left to "
    "race for connections, the busiest worker took 50-100% of a run's 50, so a run measured "
    "anything between a two-worker and a one-worker Envoy; the lab's listeners therefore deal "
    "them evenly (`exact_balance`), and the *Envoy's workers* line under those tables shows "
    "the split of every run. Mirroring adds a second upstream write per write command; MSET "
    "through the proxy costs one upstream request per shard touched."
)


def _reps_text(figures: dict[str, Any]) -> str:
    reps, most, precision = figures["reps"], figures.get("max_reps"), figures.get("precision_pct")
    if not precision or not most or most <= reps:
        return f"{reps} repetitions per path and case"
    return (f"At least {reps} repetitions per path and case, more (at most {most}) while the "
            f"median ratio's estimated 95% confidence half-width is wider than +-{precision:g}% "
            "(1.96 x 1.2533 x sd / sqrt(n) of the log ratios; columns *reps* and *+-95%*)")


def _reps_short(figures: dict[str, Any]) -> str:
    most = figures.get("max_reps")
    if figures.get("precision_pct") and most and most > figures["reps"]:
        return f"{figures['reps']}-{most} reps"
    return f"{figures['reps']} reps"


def _ci_text(case: dict[str, Any]) -> str:
    if "ratio_ci95_pct" in case:
        ci = case["ratio_ci95_pct"]
    else:  # a run from before the column: the same estimate, from its ratios
        spread = overhead.halfwidth(case["ratios"])
        ci = round(100 * spread, 1) if math.isfinite(spread) else None
    return "-" if ci is None else f"{ci:.1f}%"


LOPSIDED = 0.75  # a run whose busiest Envoy worker took this share of its connections, or more


def worker_split(config: dict[str, Any]) -> str:
    """How the kernel dealt the proxy runs' connections to Envoy's workers, and how far the
    ratios of lopsided runs fell from their case's median; "" without per-worker counts."""
    shares: list[float] = []
    lopsided: list[float] = []
    even: list[float] = []
    for case in config["cases"]:
        median = case["ratio_median"]
        for run, ratio in zip(case["proxy"].get("runs", []), case["ratios"], strict=False):
            split = run.get("workers") or []
            if len(split) < 2 or not sum(split):
                continue
            share = max(split) / sum(split)
            shares.append(share)
            (lopsided if share >= LOPSIDED else even).append(ratio / median - 1)
    if not shares:
        return ""
    whole = sum(share == 1.0 for share in shares)
    text = (f"**Envoy's workers.** Connections each of the {config['envoy_concurrency']} "
            "workers accepted in a proxy run (Envoy's per-worker `downstream_cx_total`): the "
            f"busiest took a median {statistics.median(shares):.0%} of a run's, at worst "
            f"{max(shares):.0%} (all on one worker in {whole} of {len(shares)} runs).")
    if lopsided and even:
        text += (f" Runs where it took >= {LOPSIDED:.0%} ({len(lopsided)}): ratio a median "
                 f"{statistics.median(lopsided):+.1%} from their case's median; the others "
                 f"({len(even)}): {statistics.median(even):+.1%}.")
    return text


def _case_label(case: dict[str, Any]) -> str:
    return f"{case['test'].replace(' (10 keys)', '')} P{case['pipeline']}"


def _config_label(config: dict[str, Any]) -> str:
    return (f"mirror {'on' if config['mirror'] else 'off'}, "
            f"Envoy --concurrency {config['envoy_concurrency']}")


def charts(figures: dict[str, Any], out: Path) -> list[tuple[str, str]]:
    """Draw what the figures hold; (title, stem) for each chart written under out/charts."""
    if not charts_mod.available():
        return []
    where = out / CHARTS_DIR
    drawn: list[tuple[str, str | None]] = []
    configs = figures.get("ProxyOverhead") or []
    if configs:
        categories = [_case_label(c) for c in configs[0]["cases"]]
        series = {_config_label(config): [(c["ratio_median"], c["ratio_min"], c["ratio_max"])
                                          for c in config["cases"]] for config in configs}
        title = (f"ProxyOverhead: Envoy {configs[0]['envoy_version']}, Redis "
                 f"{configs[0]['redis_version']}, redis-benchmark -c {figures['clients']}, "
                 f"{_reps_short(figures)}")
        drawn.append(("Throughput ratio, proxy / direct, per command and pipeline depth",
                      charts_mod.ratio_bars(where, "bench-overhead-ratios", title, categories,
                                            series)))
        # the tutorial's sidecar: mirror on, Envoy's default concurrency (2 on this machine)
        main = next((c for c in configs if c["mirror"] and c["envoy_concurrency"] == 2),
                    configs[0])
        latency = {
            "proxy p50": [c["proxy"]["p50_ms_median"] for c in main["cases"]],
            "direct p50": [c["direct"]["p50_ms_median"] for c in main["cases"]],
            "proxy p99": [c["proxy"]["p99_ms_median"] for c in main["cases"]],
            "direct p99": [c["direct"]["p99_ms_median"] for c in main["cases"]],
        }
        drawn.append((f"Latency percentiles ({_config_label(main)})",
                      charts_mod.latency_bars(where, "bench-latency",
                                              f"Latency, {_config_label(main)}",
                                              categories, latency)))
    ready = {entry["backend"]: entry["samples_s"] for entry in figures.get("TimeToReady", [])
             if entry["samples_s"]}
    if ready:
        drawn.append(("TimeToReady per backend",
                      charts_mod.samples_chart(where, "bench-time-to-ready",
                                               "TimeToReady: up until the proxy "
                                               "has the full topology", "s", ready, target=5.0)))
    failover = figures.get("FailoverRecovery") or {}
    if failover:
        drawn.append(("FailoverRecovery",
                      charts_mod.samples_chart(where, "bench-failover-recovery",
                                               "FailoverRecovery: master killed until a write "
                                               "through the proxy succeeds", "s", failover)))
    return [(title, stem) for title, stem in drawn if stem]


def markdown(figures: dict[str, Any], drawn: list[tuple[str, str]], out: Path) -> str:
    del out
    configs = figures.get("ProxyOverhead") or []
    versions = (f"Envoy {configs[0]['envoy_version']}, Redis {configs[0]['redis_version']}, "
                if configs else "")
    lines = [
        "# redis-mesh-lab benchmarks", "",
        f"Run of `nox -s bench` on {figures['date']}: {figures['cores']} cores, "
        f"{versions}redis-benchmark {figures['redis_benchmark']}. Load average "
        f"(1/5/15 min, /proc/loadavg) before: {figures['load_before']}; after: "
        f"{figures.get('load_after', '?')}.", "",
        "> These machines are shared with other workloads and noisy: compare ratios taken in "
        "the same run, not absolute rps across runs.", "",
    ]
    for entry in figures.get("TimeToReady", []):
        if not entry["samples_s"]:
            lines += [f"**TimeToReady** ({entry['backend']} backend): `up` failed: "
                      f"{entry.get('error', '?')}", ""]
            continue
        target = f" (target <= {entry['target_s']:g} s)" if entry.get("target_s") else ""
        lines += [f"**TimeToReady** ({entry['backend']} backend): median {entry['median_s']} s, "
                  f"min {entry['min_s']} s, max {entry['max_s']} s over "
                  f"{len(entry['samples_s'])} runs{target}.", ""]
    if "SuiteRun" in figures:  # a run from before `Runs` (redrawn by `render`)
        suite = figures["SuiteRun"]
        lines += [f"**Tutorial profile run** (attached lab, includes pytest start-up): "
                  f"{suite['attached_run_s']} s ({suite['summary']}).", ""]
    lines += timing.markdown(figures.get("Runs", []), figures.get("TutorialChain", []))
    if configs:
        lines += ["## ProxyOverhead (redis-benchmark)", "", DIRECT_PATH, "",
                  f"{_reps_text(figures)}, each run >= "
                  f"{figures['min_seconds']:g} s, `-c {figures['clients']}`, "
                  f"`-r {figures['keyspace']}`. Persistence: "
                  f"{figures.get('persistence_note', 'as configured')}. "
                  "Command lines (N calibrated):", "",
                  f"- proxy: `{configs[0]['command_lines']['proxy']}`",
                  f"- direct: `{configs[0]['command_lines']['direct']}`", ""]
    for config in configs:
        lines += [f"### {_config_label(config)}", "",
                  "| case | ratio median | +-95% | reps | min-max | spread | proxy rps | "
                  "direct rps | proxy p50 / p99 ms | direct p50 / p99 ms | shortest run s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for case in config["cases"]:
            proxy, direct = case["proxy"], case["direct"]
            lines.append(
                f"| {_case_label(case)} | **{case['ratio_median']:.2f}** | {_ci_text(case)} | "
                f"{case.get('reps', len(case['ratios']))} | "
                f"{case['ratio_min']:.2f}-{case['ratio_max']:.2f} | "
                f"{case['ratio_spread_pct']:.0f}% | {proxy['rps_median']} | "
                f"{direct['rps_median']} | {proxy['p50_ms_median']} / {proxy['p99_ms_median']} | "
                f"{direct['p50_ms_median']} / {direct['p99_ms_median']} | "
                f"{min(proxy['seconds_min'], direct['seconds_min'])} |")
        lines.append("")
        if split := worker_split(config):
            lines += [split, ""]
        doubted = [f"{_case_label(case)} {name} run {index + 1}"
                   for case in config["cases"] for name in ("proxy", "direct")
                   for index, run in enumerate(case[name].get("runs", []))
                   if run.get("clock", "").startswith("summary (")]
        if doubted:
            lines += ["Throughput from the summary's clock, the last tick being ruled out by "
                      "it: " + ", ".join(doubted) + ".", ""]
    if configs:
        lines += [LIMITS, ""]
    if figures.get("Reproducibility"):
        from lab.bench import compare

        again = figures["Reproducibility"]
        lines += [compare.markdown(again["rows"], figures["date"], again["other_date"])]
    if drawn:
        lines += ["## Charts", ""]
        for title, stem in drawn:
            lines += [f"### {title}", "", f"![{title}]({CHARTS_DIR}/{stem}.png)",
                      f"([SVG]({CHARTS_DIR}/{stem}.svg))", ""]
    elif not charts_mod.available():
        lines += [f"(No charts: {charts_mod.INSTALL_HINT}.)", ""]
    return "\n".join(lines)


def render(json_path: Path, out: Path) -> str:
    """Redraw the charts and benchmarks.md from a saved benchmarks.json (no measuring)."""
    import json

    figures = json.loads(json_path.read_text())
    drawn = charts(figures, out)
    text = markdown(figures, drawn, out)
    (out / "benchmarks.md").write_text(text)
    return text


if __name__ == "__main__":
    import sys

    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("reports/benchmarks.json")
    print(render(source, source.parent))
