"""ProxyOverhead: redis-benchmark through the proxy vs straight to the cluster, interleaved.

For every case (test x pipeline depth) and repetition, the two paths run back to back, their
order alternating between repetitions so a drift in the machine's load hits both alike. The
ratio of one repetition is proxy rps / direct rps of that adjacent pair; a case reports the
median ratio and its min-max over the repetitions, and each path's median p50/p99 latency.

Repetitions adapt to the noise: every case gets at least `reps` of them, then more, up to
`max_reps`, while its median ratio's estimated 95% confidence half-width is wider than
`precision`. The estimate is the large-sample one for a median, 1.96 x 1.2533 x sd / sqrt(n),
over the log ratios (a ratio's noise is multiplicative). A quiet case stops at `reps`; a case
that drew a noisy pair is measured until its median is pinned down or the cap is reached, and
the report says which.

Each measurement lasts at least `min_seconds`: the request count is sized from a short
calibration run per path and case, and a measurement that finishes early (the machine got
faster) is resized and repeated, so no figure comes from a sub-second run.

With `workers` (a reader of Envoy's per-worker `downstream_cx_total` counters), every proxy
run records how many connections each Envoy worker accepted: a run whose connections all
land on one worker measures a one-worker Envoy, whatever --concurrency says.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from lab.bench import redisbench
from lab.bench.redisbench import Result, Target

COMMANDS = ("set", "get", "incr", "mset")  # GET follows SET, so most GETs hit a key
PIPELINES = (1, 16)
CALIBRATION_SECONDS = 0.4
MAX_RESIZES = 3
PRECISION = 0.04  # target 95% half-width of a case's median ratio, relative
MAX_REPS = 15


def halfwidth(ratios: list[float]) -> float:
    """The estimated 95% confidence half-width of the median of `ratios`, relative.

    From the log ratios' standard deviation (the asymptotic standard error of a median is
    1.2533 sd / sqrt(n)); infinite below 3 ratios, where a spread means nothing."""
    if len(ratios) < 3:
        return math.inf
    logs = [math.log(r) for r in ratios]
    return math.expm1(1.96 * 1.2533 * statistics.stdev(logs) / math.sqrt(len(logs)))


@dataclass(frozen=True)
class Case:
    test: str
    pipeline: int

    @property
    def label(self) -> str:
        return f"{redisbench.TESTS[self.test]} P{self.pipeline}"


@dataclass
class CaseResult:
    case: Case
    proxy: list[Result] = field(default_factory=list)
    direct: list[Result] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [p.rps / d.rps for p, d in zip(self.proxy, self.direct, strict=True)]

    def settled(self, reps: int, max_reps: int, precision: float | None) -> bool:
        """Measured enough: `reps` pairs and a median within `precision`, or `max_reps`."""
        n = len(self.proxy)
        if n < reps:
            return False
        if precision is None or n >= max_reps:
            return True
        return halfwidth(self.ratios) <= precision

    def summary(self) -> dict[str, Any]:
        ratios = self.ratios
        median = statistics.median(ratios)
        spread = halfwidth(ratios)

        def path(results: list[Result]) -> dict[str, Any]:
            shares = [max(r.workers) / sum(r.workers) for r in results
                      if r.workers and len(r.workers) > 1 and sum(r.workers)]
            busiest = ({"busiest_worker_share_median": round(statistics.median(shares), 3),
                        "busiest_worker_share_max": round(max(shares), 3)} if shares else {})
            return {**busiest,
                "rps_median": round(statistics.median(r.rps for r in results)),
                "p50_ms_median": round(statistics.median(r.p50_ms for r in results), 3),
                "p99_ms_median": round(statistics.median(r.p99_ms for r in results), 3),
                "seconds_min": round(min(r.seconds for r in results), 2),
                "runs": [r.to_json() for r in results],
            }

        return {
            "test": redisbench.TESTS[self.case.test], "pipeline": self.case.pipeline,
            "ratio_median": round(median, 3), "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "ratio_spread_pct": round(100 * (max(ratios) - min(ratios)) / median, 1),
            "ratios": [round(r, 3) for r in ratios], "reps": len(ratios),
            "ratio_ci95_pct": round(100 * spread, 1) if math.isfinite(spread) else None,
            "proxy": path(self.proxy), "direct": path(self.direct),
        }


@dataclass
class Sizer:
    """Request counts per (path, case) so that each measurement lasts >= min_seconds."""

    binary: str
    min_seconds: float
    clients: int = 50
    keyspace: int = 100_000
    sizes: dict[tuple[str, Case], int] = field(default_factory=dict)

    def _run(self, target: Target, case: Case, requests: int) -> Result:
        return redisbench.run(self.binary, target, case.test, requests=requests,
                              clients=self.clients, pipeline=case.pipeline,
                              keyspace=self.keyspace)

    def _size_for(self, rps: float) -> int:
        # 20% over the floor, rounded up to a multiple of 1000
        return max(1000, math.ceil(rps * self.min_seconds * 1.2 / 1000) * 1000)

    def measure(self, path: str, target: Target, case: Case,
                workers: Callable[[], dict[int, int]] | None = None) -> Result:
        key = (path, case)
        if key not in self.sizes:
            probe = self._run(target, case, max(2000, 2000 * case.pipeline))
            self.sizes[key] = self._size_for(probe.rps)  # the probe is never reported
        for _ in range(MAX_RESIZES + 1):
            before = workers() if workers else {}
            result = self._run(target, case, self.sizes[key])
            if workers:
                after = workers()
                result = replace(result, workers=tuple(after[w] - before.get(w, 0)
                                                       for w in sorted(after)))
            if result.seconds >= self.min_seconds:
                return result
            self.sizes[key] = max(self._size_for(result.rps), self.sizes[key] + 1000)
        return result  # still short after resizing: reported, with its duration


def measure(binary: str, proxy: Target, direct: Target, *, reps: int = 5,
            max_reps: int = MAX_REPS, precision: float | None = PRECISION,
            min_seconds: float = 2.0, commands: tuple[str, ...] = COMMANDS,
            pipelines: tuple[int, ...] = PIPELINES, clients: int = 50,
            keyspace: int = 100_000,
            workers: Callable[[], dict[int, int]] | None = None,
            say: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """Every case, `reps` to `max_reps` interleaved pairs (see the module's docstring);
    `precision=None` measures exactly `reps` pairs per case."""
    sizer = Sizer(binary, min_seconds, clients, keyspace)
    cases = [Case(test, pipeline) for pipeline in pipelines for test in commands]
    results = {case: CaseResult(case) for case in cases}
    max_reps = max(reps, max_reps)
    while pending := [c for c in cases if not results[c].settled(reps, max_reps, precision)]:
        for case in pending:
            rep = len(results[case].proxy)
            order = (("proxy", proxy), ("direct", direct))
            if rep % 2:
                order = order[::-1]
            for name, target in order:
                result = sizer.measure(name, target, case,
                                       workers if name == "proxy" else None)
                getattr(results[case], name).append(result)
            ratios = results[case].ratios
            why = "" if rep < reps else f"  (extra: median +-{halfwidth(ratios[:-1]):.1%})"
            split = results[case].proxy[-1].workers
            if split and len(split) > 1:
                why = f"  workers {'/'.join(map(str, split))}{why}"
            say(f"    rep {rep + 1}/{reps if rep < reps else max_reps} {case.label:<20} proxy "
                f"{results[case].proxy[-1].rps:>9.0f} rps  direct "
                f"{results[case].direct[-1].rps:>9.0f} rps  ratio {ratios[-1]:.2f}{why}")
    return [results[case].summary() for case in cases]


def command_lines(binary: str, proxy: Target, direct: Target, clients: int = 50,
                  keyspace: int = 100_000) -> dict[str, str]:
    """The two command lines, with N for the calibrated request count, for the report."""
    def line(target: Target) -> str:
        argv = redisbench.argv(binary.rsplit("/", 1)[-1], target, "set", requests=0,
                               clients=clients, keyspace=keyspace)
        return " ".join(argv).replace("-n 0", "-n N").replace("-P 1 -t set", "-P 1|16 -t TEST")
    return {"proxy": line(proxy), "direct": line(direct)}
