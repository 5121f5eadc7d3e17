"""Benchmarks: TimeToReady, where the suites' and tests' time goes, ProxyOverhead.

    python benchmarks/run.py [--reps 5] [--max-reps 15] [--precision 4] [--seconds 2]
                             [--configs on:1,on:2,off:1,off:2]

ProxyOverhead brings up one local lab per configuration (mirror on/off x Envoy
--concurrency) through the Lab API and runs redis-benchmark through the proxy and with
--cluster straight to the nodes, interleaved (lab/bench/overhead.py). Figures go to
reports/benchmarks.json and reports/benchmarks.md, charts to reports/charts/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab.backends import get_backend
from lab.backends.base import UpOptions
from lab.backends.local import LocalBackend
from lab.bench import compare, overhead, persistence, redisbench, report, timing
from lab.bench.redisbench import Target
from lab.errors import LabError
from lab.handle import Lab
from lab.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
TEST_WORKERS = 5  # as noxfile.py's `tests` session (tests/test_bench_timing.py checks)
EXTENDED_WORKERS = 3  # as noxfile.py's `e2e` session runs the extended profile (checked too)


# The most `up` may take to ready, per backend: a kind lab creates a Kubernetes cluster and
# installs Istio first (issue #25: at most 120 s with everything cached)
READY_TARGET_S = {"local": 5.0, "docker": 5.0, "kind": 120.0}


def time_to_ready(backend_name: str, ups: int, progress: Progress) -> dict[str, Any]:
    """Wall time of Backend.up (the same call `redis-mesh-lab up` makes) until ready."""
    backend, samples = get_backend(backend_name), []
    for index in range(ups):
        began = time.perf_counter()
        try:
            state = backend.up(UpOptions(name=f"bench-ready-{index}"), Progress(quiet=True))
        except LabError as error:
            progress.say(f"  TimeToReady {backend_name}: up failed: {error}")
            return {"backend": backend_name, "samples_s": [], "error": str(error)}
        samples.append(time.perf_counter() - began)
        backend.down(state.name, Progress(quiet=True))
        progress.say(f"  TimeToReady {backend_name} {index + 1}/{ups}: {samples[-1]:.2f} s")
    return {"backend": backend_name, "samples_s": [round(s, 3) for s in samples],
            "median_s": round(statistics.median(samples), 3), "min_s": round(min(samples), 3),
            "max_s": round(max(samples), 3), "target_s": READY_TARGET_S.get(backend_name)}


def suite_runs(name: str, progress: Progress) -> list[dict[str, Any]]:
    """Both profiles: wall, CPU and waits per timer (lab/bench/timing.py). The tutorial one
    attached to the lab `name`; the extended one as `nox -s e2e` runs it, on EXTENDED_WORKERS
    pytest-xdist workers that each bring up a local lab of their own (included in its time)."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="rml-bench-") as tmp:
        for profile in ("tutorial", "extended"):
            reports = Path(tmp) / profile
            argv = [sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider",
                    "--lab-profile", profile, f"--lab-reports={reports}"]
            if profile == "tutorial":
                argv += ["--lab-backend", "attach", "--lab-name", name]
                how = "against the attached lab"
            else:
                argv += ["-n", str(EXTENDED_WORKERS), "--dist", "loadfile"]
                how = f"on {EXTENDED_WORKERS} workers, each with its own lab"
            with progress.step(f"the {profile} profile {how}"):
                run = timing.timed_run(f"{profile} profile", argv, cwd=ROOT,
                                       report=reports / "latest" / "conformance.yaml")
            runs.append(timing.as_figures(run))
    return runs


def tests_run(progress: Progress) -> dict[str, Any]:
    """The project's tests as `nox -s tests` runs them, with no lab of the bench's up (some
    of them take the only lab, or count the labs)."""
    argv = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider",
            "-n", str(TEST_WORKERS), "--dist", "loadgroup"]
    with progress.step("the project's tests, as `nox -s tests` runs them"):
        return timing.as_figures(timing.timed_run("nox -s tests", argv, cwd=ROOT))


def fresh_clone_runs(nox: str, ci_run: bool, logs: Path,
                     progress: Progress) -> list[dict[str, Any]]:
    """`nox -s e2e` in a fresh clone of this checkout's HEAD (its venv created, the package
    installed: what a newcomer's first run costs), and with `ci_run` CI's `.ci/run` in another
    one, with every build cached (the kind toolchain, istiod, the images: this machine's).
    Their output is kept in `logs`."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="rml-bench-clone-") as tmp:
        for what, command in [("nox -s e2e, fresh clone", [*nox.split(), "-s", "e2e"]),
                              *([(".ci/run, builds cached", ["bash", ".ci/run"])]
                                if ci_run else [])]:
            clone = Path(tmp) / what.split(",")[0].replace(" ", "-").replace("/", "")
            subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
            with progress.step(f"{what} (in {clone})"):
                run = timing.timed_run(what, command, cwd=clone, timeout=timing.CI_TIMEOUT_S,
                                       log=logs / f"{clone.name}.log")
            runs.append(timing.as_figures(run))
    return runs


def tutorial_chain() -> list[dict[str, Any]]:
    """The tutorial profile's longest timer chain, from the lab's own settings."""
    from lab import model
    from lab.node_tuning import NODE_TIMEOUT_MS

    spec = model.load_spec("127.0.0.1")
    refresh = timing.refresh_rate_s(spec.envoyfilter_documents)
    return [dataclasses.asdict(link)
            for link in timing.tutorial_chain(NODE_TIMEOUT_MS / 1000, refresh)]


def parse_configs(text: str) -> list[tuple[bool, int]]:
    """`on:1,off:2` -> [(mirror on, concurrency 1), (mirror off, concurrency 2)]."""
    configs = []
    for item in text.split(","):
        mirror, _, concurrency = item.strip().partition(":")
        if mirror not in ("on", "off") or not concurrency.isdigit() or int(concurrency) < 1:
            raise LabError(f"bad --configs item {item!r}: expected on|off:N, e.g. on:2")
        configs.append((mirror == "on", int(concurrency)))
    return configs


def proxy_overhead(binary: str, mirror: bool, concurrency: int, args: argparse.Namespace,
                   progress: Progress) -> dict[str, Any]:
    backend = LocalBackend()
    name = f"bench-oh-{'m' if mirror else 'nm'}-c{concurrency}"
    with progress.step(f"up {name} (mirror {'on' if mirror else 'off'}, "
                       f"envoy --concurrency {concurrency})"):
        state = backend.up(UpOptions(name=name, mirror=mirror, envoy_concurrency=concurrency),
                           Progress(quiet=True))
    access = backend.access(state)
    handle = Lab(state, access)
    try:
        appendonly = persistence.apply(handle, args.persistence)
        seed = state.topology.shards[0].master
        host, port = access.address(seed)
        proxy = Target(state.proxy.host, state.proxy.port,
                       threads=args.proxy_threads)
        direct = Target(host, port, cluster=True, threads=args.direct_threads)
        cases = overhead.measure(binary, proxy, direct, reps=args.reps,
                                 max_reps=args.max_reps,
                                 precision=args.precision / 100 if args.precision else None,
                                 min_seconds=args.seconds, clients=args.clients,
                                 keyspace=args.keyspace, workers=handle.worker_connections,
                                 say=progress.say)
        return {"mirror": mirror, "envoy_concurrency": concurrency,
                "envoy_version": state.envoy_version, "redis_version": state.redis_version,
                "read_policy": state.read_policy, "appendonly": appendonly,
                "command_lines": overhead.command_lines(binary, proxy, direct, args.clients,
                                                        args.keyspace),
                "cases": cases}
    finally:
        handle.close()
        backend.down(state.name, Progress(quiet=True))


def _load() -> str:
    return Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "?"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5,
                        help="repetitions per path and case, at least")
    parser.add_argument("--max-reps", type=int, default=overhead.MAX_REPS,
                        help="repetitions per case at most, while its median is not pinned "
                             "down (see --precision)")
    parser.add_argument("--precision", type=float, default=100 * overhead.PRECISION,
                        metavar="PCT",
                        help="repeat a case until its median ratio's estimated 95%% "
                             "half-width is within +-PCT%% (0: exactly --reps)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="minimum duration of every measurement")
    parser.add_argument("--configs", default="on:1,on:2,off:1,off:2",
                        help="mirror on|off : Envoy --concurrency, comma separated")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--keyspace", type=int, default=100_000, help="redis-benchmark -r")
    parser.add_argument("--proxy-threads", type=int, default=None,
                        help="redis-benchmark --threads through the proxy (default: 1)")
    parser.add_argument("--direct-threads", type=int, default=None,
                        help="--threads for --cluster (default: one per master)")
    parser.add_argument("--persistence", choices=persistence.MODES, default="off",
                        help="the nodes' AOF while measuring: off (default; see "
                             "lab/bench/persistence.py) or tutorial (appendonly yes)")
    parser.add_argument("--ups", type=int, default=3,
                        help="TimeToReady samples per backend (0: skip)")
    parser.add_argument("--ready-backends", default="local,docker",
                        help="backends whose TimeToReady is measured (a failing one is "
                             "reported, not fatal)")
    parser.add_argument("--no-suite", action="store_true",
                        help="skip the timing of the profiles and of the project's tests")
    parser.add_argument("--no-tests", action="store_true",
                        help="time the profiles, not the project's tests (about 5 minutes)")
    parser.add_argument("--nox", default=f"{sys.executable} -m nox",
                        help="how to call nox for the fresh clone's `nox -s e2e` (noxfile.py "
                             "passes the nox that runs the bench)")
    parser.add_argument("--no-clone", action="store_true",
                        help="skip `nox -s e2e` in a fresh clone (about 2 minutes)")
    parser.add_argument("--ci-run", action="store_true",
                        help="also time `.ci/run` in a fresh clone, with the builds cached "
                             "(about 30 minutes; it needs root, docker and the caches)")
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument("--compare", type=Path, default=None, metavar="BENCHMARKS_JSON",
                        help="a previous run's benchmarks.json: report how far each median "
                             "ratio moved (goal: within +-10%%)")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    progress = Progress()
    try:
        if args.reps < 1 or args.precision < 0:
            raise LabError("--reps must be >= 1 and --precision >= 0")
        configs = parse_configs(args.configs)
        binary = redisbench.find()
        figures: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "cores": os.cpu_count(),
            "load_before": _load(), "redis_benchmark": redisbench.version(binary),
            "reps": args.reps,
            "max_reps": max(args.reps, args.max_reps) if args.precision else args.reps,
            "precision_pct": args.precision or None, "min_seconds": args.seconds,
            "clients": args.clients,
            "keyspace": args.keyspace, "persistence": args.persistence,
            "persistence_note": persistence.describe(args.persistence),
        }
        if args.ups:
            progress.say(f"TimeToReady ({args.ready_backends})")
            figures["TimeToReady"] = [time_to_ready(name.strip(), args.ups, progress)
                                      for name in args.ready_backends.split(",")
                                      if name.strip()]
        if not args.no_suite:
            backend = LocalBackend()
            state = backend.up(UpOptions(name="bench-suite"), Progress(quiet=True))
            try:
                figures["Runs"] = suite_runs(state.name, progress)
            finally:
                backend.down(state.name, Progress(quiet=True))
            if not args.no_tests:
                figures["Runs"].append(tests_run(progress))
            if not args.no_clone or args.ci_run:
                figures["Runs"] += fresh_clone_runs(args.nox, args.ci_run,
                                                    args.out / "bench-logs", progress)
            figures["TutorialChain"] = tutorial_chain()
        figures["ProxyOverhead"] = []
        for mirror, concurrency in configs:
            progress.say(f"ProxyOverhead, mirror {'on' if mirror else 'off'}, "
                         f"Envoy --concurrency {concurrency}")
            figures["ProxyOverhead"].append(
                proxy_overhead(binary, mirror, concurrency, args, progress))
        figures["load_after"] = _load()
    except LabError as error:
        print(f"redis-mesh-lab bench: {error}", file=sys.stderr)
        return 2
    if args.compare:
        other = json.loads(args.compare.read_text())
        figures["Reproducibility"] = {"other_date": other.get("date", "?"),
                                      "rows": compare.compare(figures, other)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(figures, indent=2) + "\n")
    charts = report.charts(figures, args.out)
    markdown = report.markdown(figures, charts, args.out)
    (args.out / "benchmarks.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
