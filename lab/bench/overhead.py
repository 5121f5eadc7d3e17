"""ProxyOverhead: redis-benchmark through the proxy vs straight to the cluster, interleaved.

For every case (test x pipeline depth) and repetition, the two paths run back to back, their
order alternating between repetitions so a drift in the machine's load hits both alike. The
ratio of one repetition is proxy rps / direct rps of that adjacent pair; a case reports the
median ratio and its min-max over the repetitions, and each path's median p50/p99 latency.

Each measurement lasts at least `min_seconds`: the request count is sized from a short
calibration run per path and case, and a measurement that finishes early (the machine got
faster) is resized and repeated, so no figure comes from a sub-second run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab.bench import redisbench
from lab.bench.redisbench import Result, Target

COMMANDS = ("set", "get", "incr", "mset")  # GET follows SET, so most GETs hit a key
PIPELINES = (1, 16)
CALIBRATION_SECONDS = 0.4
MAX_RESIZES = 3


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

    def summary(self) -> dict[str, Any]:
        ratios = self.ratios
        median = statistics.median(ratios)

        def path(results: list[Result]) -> dict[str, Any]:
            return {
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
            "ratios": [round(r, 3) for r in ratios],
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

    def measure(self, path: str, target: Target, case: Case) -> Result:
        key = (path, case)
        if key not in self.sizes:
            probe = self._run(target, case, max(2000, 2000 * case.pipeline))
            self.sizes[key] = self._size_for(probe.rps)  # the probe is never reported
        for _ in range(MAX_RESIZES + 1):
            result = self._run(target, case, self.sizes[key])
            if result.seconds >= self.min_seconds:
                return result
            self.sizes[key] = max(self._size_for(result.rps), self.sizes[key] + 1000)
        return result  # still short after resizing: reported, with its duration


def measure(binary: str, proxy: Target, direct: Target, *, reps: int = 5,
            min_seconds: float = 2.0, commands: tuple[str, ...] = COMMANDS,
            pipelines: tuple[int, ...] = PIPELINES, clients: int = 50,
            keyspace: int = 100_000,
            say: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    sizer = Sizer(binary, min_seconds, clients, keyspace)
    cases = [Case(test, pipeline) for pipeline in pipelines for test in commands]
    results = {case: CaseResult(case) for case in cases}
    for rep in range(reps):
        for case in cases:
            order = (("proxy", proxy), ("direct", direct))
            if rep % 2:
                order = order[::-1]
            for name, target in order:
                result = sizer.measure(name, target, case)
                getattr(results[case], name).append(result)
            ratio = results[case].ratios[-1]
            say(f"    rep {rep + 1}/{reps} {case.label:<20} proxy "
                f"{results[case].proxy[-1].rps:>9.0f} rps  direct "
                f"{results[case].direct[-1].rps:>9.0f} rps  ratio {ratio:.2f}")
    return [results[case].summary() for case in cases]


def command_lines(binary: str, proxy: Target, direct: Target, clients: int = 50,
                  keyspace: int = 100_000) -> dict[str, str]:
    """The two command lines, with N for the calibrated request count, for the report."""
    def line(target: Target) -> str:
        argv = redisbench.argv(binary.rsplit("/", 1)[-1], target, "set", requests=0,
                               clients=clients, keyspace=keyspace)
        return " ".join(argv).replace("-n 0", "-n N").replace("-P 1 -t set", "-P 1|16 -t TEST")
    return {"proxy": line(proxy), "direct": line(direct)}
