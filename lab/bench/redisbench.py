"""Run `redis-benchmark` (Redis 7's C load generator) and read its output.

Two targets: the proxy (a plain host:port, the application's view) and the cluster straight
to its nodes (`--cluster`: redis-benchmark reads CLUSTER NODES, opens the connections to the
masters and, unless told otherwise, runs one client thread per master).

Throughput: each path from its exact clock. Without client threads (the proxy path) the
summary's elapsed time is taken when the last reply arrives, to the millisecond: its
throughput is the run's. With client threads (`--cluster`, `--threads`) the threads notice the
end of a run only at their next 250 ms progress tick, so the summary's elapsed time is rounded
up to a multiple of 250 ms: a 2.4 s run reads 2.5 s, its throughput 0-10 % low, and ratios
against it are biased and noisy. There every tick prints `overall:`, the requests finished
since the start divided by the time since the start, measured there and then; the last tick's
is the run's throughput to within its last 250 ms. A tick figure the summary's clock rules out
(above what the 250 ms rounding allows, or below the summary's own) is not believed: the run
keeps the summary's figure and says so (`clock`). Latencies come from the summary, whose
histogram counts every request whatever the clock.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

from lab import settings
from lab.errors import LabError

INSTALL_HINT = ("redis-benchmark not found: apt-get install redis-tools "
                "(Debian's Redis 7 client tools), or set REDIS_MESH_LAB_REDIS_BENCHMARK")

# redis-benchmark -t names -> the test name it reports
TESTS = {"set": "SET", "get": "GET", "incr": "INCR", "mset": "MSET (10 keys)"}


def find() -> str:
    """The redis-benchmark binary: $REDIS_MESH_LAB_REDIS_BENCHMARK, else PATH."""
    explicit = settings.REDIS_BENCHMARK.value()
    if explicit and os.access(explicit, os.X_OK):
        return explicit
    found = shutil.which("redis-benchmark")
    if not found:
        raise LabError(INSTALL_HINT)
    return found


def version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False,
                         timeout=10).stdout.split()
    return out[1] if len(out) > 1 else "unknown"


@dataclass(frozen=True)
class Target:
    """Where redis-benchmark sends its requests."""

    host: str
    port: int
    cluster: bool = False  # --cluster: this is one node; the others come from CLUSTER NODES
    threads: int | None = None  # None: redis-benchmark's default (1; one per master with --cluster)

    def args(self) -> list[str]:
        argv = ["-h", self.host, "-p", str(self.port)]
        if self.cluster:
            argv.append("--cluster")
        if self.threads:
            argv += ["--threads", str(self.threads)]
        return argv


@dataclass(frozen=True)
class Result:
    """One redis-benchmark test: throughput and latency percentiles (ms)."""

    test: str
    requests: int
    rps: float
    avg_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    reported_rps: float | None = None  # the summary's figure (threaded: a 250 ms-rounded clock)
    reported_seconds: float | None = None  # the summary's "completed in" (same rounding)
    clock: str = "summary"  # where rps comes from: summary, ticks, or summary (ticks implausible)
    workers: tuple[int, ...] | None = None  # proxy runs: connections accepted per Envoy worker

    @property
    def seconds(self) -> float:
        return self.requests / self.rps if self.rps else float("inf")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3),
                "workers": list(self.workers) if self.workers else None}


_TICK = re.compile(r"^(?P<test>[^\r\n:]+): rps=(?P<rps>\S+) \(overall: (?P<overall>\S+)\) "
                   r"avg_msec=\S+ \(overall: \S+\)", re.M)
_HEADER = re.compile(r"^====== (?P<test>.+) ======$", re.M)
_COMPLETED = re.compile(r"^\s*(\d+) requests completed in ([\d.]+) seconds$", re.M)
_THROUGHPUT = re.compile(r"^\s*throughput summary: ([\d.]+) requests per second$", re.M)
_LATENCY = re.compile(r"^\s*avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*(.+)$", re.M)


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


TICK = 0.25  # redis-benchmark's progress period, s: the threaded summary clock's rounding
SLACK = 0.02  # the summary prints seconds with 2 decimals; ticks lag the end by < 1 tick


def _throughput(ticks: list[float], requests: int, reported: float, seconds: float,
                threaded: bool) -> tuple[float, str]:
    """The run's throughput and which clock gave it (see the module's docstring)."""
    if not threaded:
        return reported, "summary"
    if not ticks:  # a run shorter than one tick
        return reported, "summary"
    tick = ticks[-1]
    # the true elapsed time lies in (seconds - TICK, seconds]: so does the tick's figure
    highest = requests / max(seconds - TICK, 1e-3) * (1 + SLACK)
    if reported * (1 - SLACK) <= tick <= highest:
        return tick, "ticks"
    return reported, "summary (ticks implausible)"


def parse_output(text: str, *, threaded: bool = False) -> list[Result]:
    """Every test of one redis-benchmark 7.x run (without --csv or -q). `threaded`: the run
    had client threads (--cluster or --threads), whose summary clock is rounded, so
    throughput comes from the last progress tick's `overall:` when the summary allows it;
    latencies and the summary's own throughput from its Summary block."""
    text = text.replace("\r", "\n")
    headers = list(_HEADER.finditer(text))
    if not headers:
        raise LabError("redis-benchmark printed no test summary (need redis-tools >= 7.0): "
                       + (text.strip().splitlines() or ["<no output>"])[-1][:200])
    results, start = [], 0
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        test = header["test"]
        ticks = [_finite(t["overall"]) for t in _TICK.finditer(text, start, header.start())
                 if t["test"] == test]
        body = text[header.end():end]
        completed, throughput, latency = (_COMPLETED.search(body), _THROUGHPUT.search(body),
                                          _LATENCY.search(body))
        if not (completed and throughput and latency):
            raise LabError(f"redis-benchmark's {test} summary has no throughput or latency "
                           "percentiles (need redis-tools >= 7.0)")
        values = [float(v) for v in latency[1].split()]
        reported, requests = float(throughput[1]), int(completed[1])
        rps, clock = _throughput([t for t in ticks if t], requests, reported,
                                 float(completed[2]), threaded)
        results.append(Result(
            test=test, requests=requests, rps=rps,
            avg_ms=values[0], p50_ms=values[2], p95_ms=values[3], p99_ms=values[4],
            max_ms=values[5], reported_rps=reported, reported_seconds=float(completed[2]),
            clock=clock))
        start = end
    return results


def argv(binary: str, target: Target, test: str, *, requests: int, clients: int = 50,
         pipeline: int = 1, keyspace: int = 100_000) -> list[str]:
    """The exact command line (also printed in the report, so a person can rerun it)."""
    if test not in TESTS:
        raise LabError(f"unknown redis-benchmark test {test!r}; valid: {', '.join(TESTS)}")
    return [binary, *target.args(), "-c", str(clients), "-n", str(requests),
            "-r", str(keyspace), "-P", str(pipeline), "-t", test]


def run(binary: str, target: Target, test: str, *, requests: int, clients: int = 50,
        pipeline: int = 1, keyspace: int = 100_000, timeout: float = 300) -> Result:
    command = argv(binary, target, test, requests=requests, clients=clients,
                   pipeline=pipeline, keyspace=keyspace)
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          timeout=timeout)
    if done.returncode != 0:
        raise LabError(f"redis-benchmark failed ({done.returncode}): "
                       f"{(done.stderr or done.stdout).strip()[-300:]}")
    threaded = target.cluster or (target.threads or 1) > 1
    results = [r for r in parse_output(done.stdout, threaded=threaded)
               if r.test == TESTS[test]]
    if not results:
        raise LabError(f"redis-benchmark printed no {TESTS[test]} row: {done.stdout[-300:]}")
    return results[0]
