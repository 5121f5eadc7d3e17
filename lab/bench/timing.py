"""Where a run's time goes: wall time, CPU time and the waits per timer (lab.waits), for each
profile of the suite and for the project's own tests, against the fast-feedback targets.

A run is a pytest process the bench starts and waits for. Its CPU time is what it and its
children used (getrusage of reaped children); the machine's busy CPU time (every process,
the lab's Envoy and redis-servers included) comes from /proc/stat. The waits come from the
conformance report the run wrote (`waits`, filled by the plugin from the suites' wait points).
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab import waits

TICKS = os.sysconf("SC_CLK_TCK")
# the targets of fast feedback on the 2-core machine, in seconds
TUTORIAL_CHAIN_FACTOR = 1.5  # the tutorial profile: at most 1.5 x its longest timer chain
EXTENDED_TARGET_S = 60.0
TESTS_TARGET_S = 360.0
FRESH_E2E_TARGET_S = 100.0  # `nox -s e2e` from a fresh clone, its install included
CI_TARGET_S = 1800.0  # `.ci/run` with every build cached
CI_TIMEOUT_S = 5400.0  # CI's own hard limit


@dataclass
class Run:
    what: str  # "tutorial profile", "nox -s tests"...
    command: str
    wall_s: float
    cpu_s: float  # the run's processes
    machine_busy_s: float  # every process on the machine, while it ran
    exit_code: int
    summary: str  # pytest's last line
    waits: dict[str, dict[str, float]] = field(default_factory=dict)  # timer -> count, seconds
    load_before: str = ""
    load_after: str = ""


def _busy_seconds() -> float:
    """CPU seconds the machine spent busy since boot (every core, /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / TICKS


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def timed_run(what: str, argv: Sequence[str], *, cwd: Path, report: Path | None = None,
              timeout: float = 1800, log: Path | None = None) -> Run:
    """Run `argv` to its end; with `report`, read the waits from that conformance report;
    with `log`, keep its output there."""
    load, busy, cpu, began = _load(), _busy_seconds(), _children_cpu(), time.perf_counter()
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=timeout)
    wall = time.perf_counter() - began
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(done.stdout + done.stderr, encoding="utf-8")
    # pytest's last line is on its stdout; nox's ("Session e2e was successful in ...") on
    # its stderr
    lines = [*done.stderr.strip().splitlines(), *done.stdout.strip().splitlines()]
    summary = next((ln.strip("= ").removeprefix("nox > ") for ln in reversed(lines)
                    if " in " in ln), "")
    run = Run(what=what, command=" ".join(argv[2:] if argv[1:2] == ["-m"] else argv),
              wall_s=round(wall, 2), cpu_s=round(_children_cpu() - cpu, 2),
              machine_busy_s=round(_busy_seconds() - busy, 2), exit_code=done.returncode,
              summary=summary, load_before=load, load_after=_load())
    if report is not None and report.is_file():
        profiles = (yaml.safe_load(report.read_text(encoding="utf-8")) or {}).get("profiles")
        run.waits = dict((profiles or [{}])[0].get("waits", {}))
    return run


@dataclass(frozen=True)
class Link:
    timer: str
    seconds: float
    why: str


def tutorial_chain(node_timeout_s: float, refresh_s: float) -> list[Link]:
    """The longest chain of timers the tutorial profile must wait through, in one test
    (ReadPolicyReplica's replica-down test): the cluster flags the stopped replica FAIL,
    Envoy's next refresh drops it; once it is started, Envoy's next refresh has it again."""
    return [Link(waits.NODE_TIMEOUT, node_timeout_s, "the stopped replica is flagged FAIL"),
            Link(waits.REFRESH, refresh_s, "Envoy's next CLUSTER SLOTS drops it"),
            Link(waits.REFRESH, refresh_s, "started again, Envoy's next refresh has it")]


def refresh_rate_s(documents: Sequence[Any]) -> float:
    """`cluster_refresh_rate` as the lab's EnvoyFilters set it (e.g. "5s")."""
    for value in _values(documents, "cluster_refresh_rate"):
        return float(str(value).removesuffix("s"))
    raise ValueError("no cluster_refresh_rate in the lab's EnvoyFilters")


def _values(node: Any, key: str) -> Iterator[Any]:
    if isinstance(node, Mapping):
        for name, value in node.items():
            if name == key:
                yield value
            yield from _values(value, key)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _values(item, key)


def as_figures(run: Run) -> dict[str, Any]:
    return asdict(run)


def _target(run: dict[str, Any], chain: Sequence[dict[str, Any]]) -> tuple[float | None, str]:
    what = run["what"]
    if what == "tutorial profile":
        longest = sum(link["seconds"] for link in chain)
        return TUTORIAL_CHAIN_FACTOR * longest, (f"{TUTORIAL_CHAIN_FACTOR:g} x the chain "
                                                 f"({longest:g} s)")
    if what == "extended profile":
        return EXTENDED_TARGET_S, ""
    if what == "nox -s tests":
        return TESTS_TARGET_S, ""
    if what.startswith("nox -s e2e"):
        return FRESH_E2E_TARGET_S, ""
    if what.startswith(".ci/run"):
        return CI_TARGET_S, ""
    return None, ""


def _e2e_parts(run: dict[str, Any], runs: Sequence[dict[str, Any]]) -> str:
    """`nox -s e2e` runs both profiles at once, plus what a fresh clone adds."""
    by_what = {r["what"]: r["wall_s"] for r in runs}
    tutorial, extended = by_what.get("tutorial profile"), by_what.get("extended profile")
    if tutorial is None or extended is None:
        return "It runs both profiles at once, after creating its venv and installing the package."
    rest = run["wall_s"] - max(tutorial, extended)
    return (f"It runs the tutorial profile ({tutorial:g} s above) and the extended one "
            f"({extended:g} s above) at once; the other {rest:.0f} s are its venv, the "
            "package's install, the HTML report, and the two profiles slowing each other down.")


def markdown(runs: Sequence[dict[str, Any]], chain: Sequence[dict[str, Any]]) -> list[str]:
    """The report's section: one table of the runs, one of their waits per timer."""
    if not runs:
        return []
    lines = ["## Where the time goes", "",
             "Each run is one pytest process, started by the bench and waited for. *CPU* is "
             "what that process and its children used; *machine busy* is the CPU time every "
             "process of the machine used meanwhile (the lab's Envoy and redis-servers "
             "included), out of cores x wall. *Waited* is the time the suites spent in their "
             "wait points (lab/waits.py), each counted once under the timer that bounds it.",
             "",
             "| run | wall s | target | CPU s | machine busy s | waited s | exit | pytest | "
             "load before / after |",
             "|---|---|---|---|---|---|---|---|---|"]
    cores = os.cpu_count() or 1
    for run in runs:
        target, how = _target(run, chain)
        verdict = ("-" if target is None else
                   f"<= {target:g} s{f' ({how})' if how else ''}: "
                   f"{'met' if run['wall_s'] <= target else 'not met'}")
        waited = sum(w["seconds"] for w in run["waits"].values())
        lines.append(
            f"| {run['what']} | {run['wall_s']:g} | {verdict} | {run['cpu_s']:g} | "
            f"{run['machine_busy_s']:g} of {cores * run['wall_s']:.0f} | "
            f"{waited:.1f}" + (f" ({100 * waited / run['wall_s']:.0f}%)" if run["wall_s"] else "")
            + f" | {run['exit_code']} | {run['summary']} | "
            f"{run['load_before']} / {run['load_after']} |")
    lines.append("")
    why = []
    for run in runs:  # a target not met: where the run's time went instead
        target, _ = _target(run, chain)
        if target is None or run["wall_s"] <= target:
            continue
        spent = sorted(run["waits"].items(), key=lambda item: -item[1]["seconds"])
        largest = ", ".join(f"`{name}` {tally['seconds']:.1f} s in {int(tally['count'])} "
                            f"waits" for name, tally in spent[:3] if tally["seconds"] >= 0.5)
        waited = sum(w["seconds"] for w in run["waits"].values())
        why.append(f"*{run['what']}*: {run['wall_s']:g} s against {target:g} s. "
                   + (f"It waited {waited:.1f} s, most on {largest}; the rest is pytest, "
                      "the clients and the CPU." if largest else
                      _e2e_parts(run, runs) if run["what"].startswith("nox -s e2e") else
                      "Its time is not spent in the suites' wait points."))
    if why:
        lines += [*why, ""]
    timers = sorted({t for run in runs for t in run["waits"]},
                    key=lambda t: list(waits.TIMERS).index(t) if t in waits.TIMERS else 99)
    if timers:
        measured = [r for r in runs if r["waits"]]
        header = " | ".join(r["what"] for r in measured)
        lines += ["**Waits per timer** (seconds, how many waits, share of the run's wall time):",
                  "", f"| timer | {header} | what bounds it |",
                  "|---|" + "---|" * len(measured) + "---|"]
        for timer in timers:
            cells = []
            for run in measured:
                tally = run["waits"].get(timer)
                cells.append("-" if not tally else
                             f"{tally['seconds']:.1f} ({int(tally['count'])}, "
                             f"{100 * tally['seconds'] / run['wall_s']:.0f}%)")
            lines.append(f"| `{timer}` | " + " | ".join(cells) + f" | "
                         f"{waits.TIMERS.get(timer, '?')} |")
        lines.append("")
    if chain:
        total = sum(link["seconds"] for link in chain)
        steps = ", then ".join(f"`{link['timer']}` {link['seconds']:g} s ({link['why']})"
                               for link in chain)
        lines += [f"**The tutorial profile's longest timer chain**: {total:g} s: {steps}.", ""]
    return lines
