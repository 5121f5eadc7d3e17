"""Flakiness of the conformance suite: `python -m lab.flake N [--backend local]`.

Brings up one lab, runs the tutorial profile (plus Resharding, as `nox -s e2e` does) N times
in a row against it, and counts the failures of each test. Writes reports/flake.md and
reports/flake.yaml; exits 1 if any run had a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import yaml

from lab.backends import BACKENDS, UpOptions, get_backend
from lab.errors import LabError
from lab.mutations import ALSO, run_suite
from lab.progress import Progress


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.flake", description=__doc__)
    parser.add_argument("runs", type=int, nargs="?", default=10, help="how many runs (10)")
    parser.add_argument("--backend", default="local", help=f"one of {', '.join(BACKENDS)}")
    parser.add_argument("--name", default="flake", help="the lab's name (default: flake)")
    parser.add_argument("--reports", default="reports", type=Path)
    args = parser.parse_args(argv)
    progress = Progress()
    backend = get_backend(args.backend)
    failures: Counter[str] = Counter()
    reasons: dict[str, list[str]] = {}
    passed_runs = 0
    durations: list[float] = []
    began = time.monotonic()
    try:
        with progress.step(f"up lab {args.name} on backend {args.backend}"):
            backend.up(UpOptions(name=args.name), Progress(quiet=True))
        for index in range(1, args.runs + 1):
            start = time.monotonic()
            code, tests, tail = run_suite(args.name, "tutorial", ALSO, failfast=False,
                                          reports=args.reports / "flake")
            durations.append(time.monotonic() - start)
            failed = {n: str(t["reason"]) for n, t in tests.items() if t["outcome"] == "failed"}
            if not tests:
                failed = {"(no verdicts)": f"pytest exit {code}: {tail}"}
            for nodeid, reason in failed.items():
                failures[nodeid] += 1
                reasons.setdefault(nodeid, []).append(f"run {index}: {reason}")
            passed_runs += not failed
            progress.say(f"  run {index}/{args.runs}: "
                         + ("ok" if not failed else f"FAILED {', '.join(failed)}")
                         + f" ({durations[-1]:.1f}s)")
    except LabError as exc:
        print(f"flake: error: {exc}", file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(Exception):
            backend.down(args.name, Progress(quiet=True))
    seconds = time.monotonic() - began
    write(args.reports, args.backend, runs=args.runs, passed=passed_runs, failures=failures,
          reasons=reasons, seconds=seconds, durations=durations)
    progress.say(f"{passed_runs}/{args.runs} runs without a failure in {seconds:.0f}s; "
                 f"reports: {args.reports / 'flake.md'}")
    return 0 if passed_runs == args.runs else 1


def write(reports: Path, backend: str, *, runs: int, passed: int, failures: Counter[str],
          reasons: dict[str, list[str]], seconds: float, durations: list[float]) -> None:
    reports.mkdir(parents=True, exist_ok=True)
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    (reports / "flake.yaml").write_text(yaml.safe_dump({
        "date": when, "backend": backend, "runs": runs, "runsWithoutFailure": passed,
        "seconds": round(seconds, 1), "medianRunSeconds": round(
            sorted(durations)[len(durations) // 2], 1) if durations else None,
        "failuresPerTest": dict(failures), "failures": reasons}, sort_keys=False),
        encoding="utf-8")
    lines = ["# Flakiness of the conformance suite", "",
             f"{when}, backend `{backend}`: the tutorial profile (+ Resharding) {runs} times "
             f"against one lab: **{passed}/{runs} runs without a failure** "
             f"({seconds:.0f} s).", ""]
    if failures:
        lines += ["| test | failures |", "|---|---|"]
        lines += [f"| `{t}` | {n} |" for t, n in failures.most_common()]
        lines += ["", "## Failures", ""]
        lines += [f"- `{t}` {r}" for t, rs in reasons.items() for r in rs]
    (reports / "flake.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
