"""Run `redis-benchmark` (Redis 7's C load generator) and parse its `--csv` output.

Two targets: the proxy (a plain host:port, the application's view) and the cluster straight
to its nodes (`--cluster`: redis-benchmark reads CLUSTER NODES, opens the connections to the
masters and, unless told otherwise, runs one client thread per master).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

from lab.errors import LabError

INSTALL_HINT = ("redis-benchmark not found: apt-get install redis-tools "
                "(Debian's Redis 7 client tools), or set REDIS_MESH_LAB_REDIS_BENCHMARK")

# redis-benchmark -t names -> the test name its CSV reports
TESTS = {"set": "SET", "get": "GET", "incr": "INCR", "mset": "MSET (10 keys)"}


def find() -> str:
    """The redis-benchmark binary: $REDIS_MESH_LAB_REDIS_BENCHMARK, else PATH."""
    explicit = os.environ.get("REDIS_MESH_LAB_REDIS_BENCHMARK")
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

    @property
    def seconds(self) -> float:
        return self.requests / self.rps if self.rps else float("inf")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


def parse_csv(text: str, requests: int) -> list[Result]:
    """Parse `redis-benchmark --csv` (7.x: test, rps, avg, min, p50, p95, p99, max latency)."""
    lines = [line for line in text.splitlines() if line.startswith('"')]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    if not rows or "p99_latency_ms" not in rows[0]:
        raise LabError("redis-benchmark printed no 7.x CSV (need redis-tools >= 7.0): "
                       + (text.strip().splitlines() or ["<no output>"])[-1][:200])
    return [Result(test=row["test"], requests=requests, rps=float(row["rps"]),
                   avg_ms=float(row["avg_latency_ms"]), p50_ms=float(row["p50_latency_ms"]),
                   p95_ms=float(row["p95_latency_ms"]), p99_ms=float(row["p99_latency_ms"]),
                   max_ms=float(row["max_latency_ms"])) for row in rows]


def argv(binary: str, target: Target, test: str, *, requests: int, clients: int = 50,
         pipeline: int = 1, keyspace: int = 100_000) -> list[str]:
    """The exact command line (also printed in the report, so a person can rerun it)."""
    if test not in TESTS:
        raise LabError(f"unknown redis-benchmark test {test!r}; valid: {', '.join(TESTS)}")
    return [binary, *target.args(), "-c", str(clients), "-n", str(requests),
            "-r", str(keyspace), "-P", str(pipeline), "-t", test, "--csv"]


def run(binary: str, target: Target, test: str, *, requests: int, clients: int = 50,
        pipeline: int = 1, keyspace: int = 100_000, timeout: float = 300) -> Result:
    command = argv(binary, target, test, requests=requests, clients=clients,
                   pipeline=pipeline, keyspace=keyspace)
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          timeout=timeout)
    if done.returncode != 0:
        raise LabError(f"redis-benchmark failed ({done.returncode}): "
                       f"{(done.stderr or done.stdout).strip()[-300:]}")
    results = [r for r in parse_csv(done.stdout, requests) if r.test == TESTS[test]]
    if not results:
        raise LabError(f"redis-benchmark printed no {TESTS[test]} row: {done.stdout[-300:]}")
    return results[0]
