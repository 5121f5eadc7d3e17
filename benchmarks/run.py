"""Benchmarks: TimeToReady, the tutorial profile's run time, ProxyOverhead.

Everything runs side by side in one invocation on the embedded lab; figures are printed
and written to reports/benchmarks.json and reports/benchmarks.md. Request loops are
bounded in count and only touch loopback.

    python benchmarks/run.py [--ups 3] [--ops 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from lab.backends.base import UpOptions
from lab.backends.local import LocalBackend
from lab.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"


def time_to_ready(ups: int) -> dict[str, Any]:
    backend, samples = LocalBackend(), []
    for index in range(ups):
        began = time.perf_counter()
        state = backend.up(UpOptions(name=f"bench-ready-{index}"), Progress(quiet=True))
        samples.append(time.perf_counter() - began)
        backend.down(state.name, Progress(quiet=True))
    return {"samples_s": [round(s, 3) for s in samples], "median_s": round(
        statistics.median(samples), 3), "min_s": round(min(samples), 3), "target_s": 5.0}


def suite_run(name: str) -> dict[str, Any]:
    began = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider",
         "--lab-backend", "attach", "--lab-name", name,
         f"--lab-reports={REPORTS / 'bench'}"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=600,
    )
    attached = time.perf_counter() - began
    return {"profile": "tutorial", "attached_run_s": round(attached, 2),
            "exit_code": run.returncode,
            "summary": (run.stdout.strip().splitlines() or [""])[-1]}


def _latencies(call, ops: int) -> dict[str, float]:
    samples = []
    began = time.perf_counter()
    for index in range(ops):
        t0 = time.perf_counter()
        call(index)
        samples.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - began
    samples.sort()
    return {"ops_per_s": round(ops / elapsed), "p50_us": round(samples[len(samples) // 2] * 1e6),
            "p99_us": round(samples[int(len(samples) * 0.99)] * 1e6)}


def proxy_overhead(state, ops: int) -> dict[str, Any]:
    proxy = redis.Redis(state.proxy["host"], state.proxy["port"], protocol=2)
    first = state.topology.nodes[0]
    direct = RedisCluster(startup_nodes=[ClusterNode(first.host, first.port)], protocol=2)
    keys = [f"bench-{i % 1000}" for i in range(ops)]
    result: dict[str, Any] = {"ops": ops, "client": "one synchronous connection"}
    for command in ("SET", "GET"):
        def via_proxy(i: int, command: str = command) -> None:
            proxy.execute_command(command, keys[i], *(["v"] if command == "SET" else []))

        def via_cluster(i: int, command: str = command) -> None:
            if command == "SET":
                direct.set(keys[i], "v")
            else:
                direct.get(keys[i])

        through = _latencies(via_proxy, ops)
        straight = _latencies(via_cluster, ops)
        result[command] = {
            "proxy": through, "direct_cluster_client": straight,
            "throughput_ratio_proxy_vs_direct": round(
                through["ops_per_s"] / straight["ops_per_s"], 3),
            "p50_ratio_proxy_vs_direct": round(through["p50_us"] / straight["p50_us"], 3),
        }
    proxy.close()
    direct.close()
    return result


def _markdown(figures: dict[str, Any]) -> str:
    ready = figures["TimeToReady"]
    lines = [
        "# redis-mesh-lab benchmarks", "",
        f"Machine: {os.cpu_count()} cores; one run, side by side.", "",
        f"**TimeToReady** (`up`, local backend): median {ready['median_s']} s, "
        f"min {ready['min_s']} s over {len(ready['samples_s'])} runs (target <= 5 s).", "",
        f"**Tutorial profile run** (attached lab): {figures['SuiteRun']['attached_run_s']} s "
        f"({figures['SuiteRun']['summary']}).", "",
        "**ProxyOverhead** (read_policy REPLICA, mirror on):", "",
        "| command | path | ops/s | p50 us | p99 us |", "|---|---|---|---|---|",
    ]
    overhead = figures["ProxyOverhead"]
    for command in ("SET", "GET"):
        for path in ("proxy", "direct_cluster_client"):
            row = overhead[command][path]
            lines.append(f"| {command} | {path} | {row['ops_per_s']} | {row['p50_us']} | "
                         f"{row['p99_us']} |")
        lines.append(f"| {command} | ratio proxy/direct | "
                     f"{overhead[command]['throughput_ratio_proxy_vs_direct']} | "
                     f"{overhead[command]['p50_ratio_proxy_vs_direct']} | |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ups", type=int, default=3)
    parser.add_argument("--ops", type=int, default=5000)
    args = parser.parse_args()
    REPORTS.mkdir(exist_ok=True)
    figures: dict[str, Any] = {"TimeToReady": time_to_ready(args.ups)}
    backend = LocalBackend()
    state = backend.up(UpOptions(name="bench"), Progress(quiet=True))
    try:
        figures["SuiteRun"] = suite_run(state.name)
        figures["ProxyOverhead"] = proxy_overhead(state, min(args.ops, 50_000))
    finally:
        backend.down(state.name, Progress(quiet=True))
    (REPORTS / "benchmarks.json").write_text(json.dumps(figures, indent=2) + "\n")
    markdown = _markdown(figures)
    (REPORTS / "benchmarks.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
