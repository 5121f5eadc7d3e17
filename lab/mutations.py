"""Mutation testing of the conformance suite: `python -m lab.mutations --backend local`.

Brings up a few labs (`--labs`, default 2) on the backend, and for each catalogue entry
(lab/mutants.py) swaps it in as the lab's extra EnvoyFilter (`Backend.reconfigure`:
only Envoy restarts) and runs the suite attached to that lab. A mutant is *caught* when
exactly the features it declares fail; a conforming variant (declaring none) must pass.
The lab without any extra EnvoyFilter runs first as `baseline` (the tutorial profile), and
as `baseline-extended` when extended entries are run. Writes
reports/mutations.md and reports/mutations.yaml; exits 1 on any miss, false alarm or error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lab import mutants as catalogue_mod
from lab import settings
from lab.backends import BACKENDS, UpOptions, get_backend
from lab.backends.base import Backend
from lab.conformance.features import PROFILES
from lab.conformance.variants import is_variant_of
from lab.errors import LabError
from lab.progress import Progress
from lab.state import registry

ALSO = ("Resharding",)  # run with the tutorial profile, as `nox -s e2e` does
RUN_TIMEOUT = 300  # one suite run; a kind lab's variant labs are clusters of their own:
RUN_TIMEOUTS = {"kind": 3600, "existing": 3600}  # the extended profile there took 1,825 s
STOP_TIMEOUT = 120


@dataclass
class Verdict:
    mutant: str
    description: str
    expected: tuple[str, ...]
    failed: tuple[str, ...] = ()
    verdict: str = "error"  # caught | passed | missed | false alarm | missed, false alarm | error
    seconds: float = 0.0
    reasons: dict[str, str] = field(default_factory=dict)  # failed test -> its failure line

    @property
    def ok(self) -> bool:
        return self.verdict in ("caught", "passed")


def judge(expected: Sequence[str], failed: Sequence[str]) -> str:
    missing, extra = set(expected) - set(failed), set(failed) - set(expected)
    if missing and extra:
        return "missed, false alarm"
    if missing:
        return "missed"
    if extra:
        return "false alarm"
    return "caught" if expected else "passed"


def suite_args() -> list[str]:
    """The suite: the source checkout's suites/, else the installed lab.suites."""
    source = Path(__file__).resolve().parent.parent / "suites"
    return [str(source)] if source.is_dir() else ["--pyargs", "lab.suites"]


def run_suite(lab: str, profile: str, also: Sequence[str], failfast: bool,
              reports: Path, *, timeout: float = RUN_TIMEOUT
              ) -> tuple[int, dict[str, dict[str, object]], str]:
    """Run the suite attached to `lab`; returns pytest's exit code, the per-test verdicts
    (from lab.verdict_recorder) and the tail of its output."""
    with tempfile.TemporaryDirectory(prefix="rml-verdicts-") as tmp:
        out = Path(tmp) / "verdicts.json"
        argv = [sys.executable, "-m", "pytest", *suite_args(), "-p", "no:cacheprovider",
                "-p", "lab.verdict_recorder", "-q", "--lab-backend", "attach",
                "--lab-name", lab, "--lab-profile", profile, f"--lab-reports={reports}"]
        if also:
            argv.append(f"--lab-also={','.join(also)}")
        env = {**os.environ, settings.VERDICTS.name: str(out),
               settings.FEATURE_FAILFAST.name: "1" if failfast else "0"}
        code, output = _run_bounded(argv, env, timeout)
        tail = "\n".join(output.strip().splitlines()[-15:])
        if not out.is_file():
            return code, {}, tail
        data = json.loads(out.read_text(encoding="utf-8"))
        return code, data["tests"], tail


def _run_bounded(argv: Sequence[str], env: dict[str, str],
                 timeout: float = RUN_TIMEOUT) -> tuple[int, str]:
    """Run the suite for at most `timeout` seconds. Past it, SIGTERM, which pytest's plugin
    turns into an interruption that takes its variant labs down; SIGKILL only if that does not
    end it within STOP_TIMEOUT (then `sweep_variants` takes them down)."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                output, _ = proc.communicate(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            stopped = f"timed out after {timeout:g} s (stopped with SIGTERM)"
            output = f"{output.rstrip()}\n{stopped}"
        return proc.returncode, output


def sweep_variants(backend: Backend, lab: str) -> list[str]:
    """Take down the variant labs of `lab` that a suite run left behind; their names."""
    left = [name for name, _, _ in registry() if is_variant_of(name, lab)]
    for name in left:
        with contextlib.suppress(Exception):
            backend.down(name, Progress(quiet=True))
    return left


def evaluate(name: str, description: str, expected: tuple[str, ...], *, lab: str,
             profile: str, reports: Path, timeout: float = RUN_TIMEOUT) -> Verdict:
    also = tuple(sorted(set(ALSO if profile == "tutorial" else ()) |
                        (set(expected) - set(PROFILES[profile]))))
    began = time.monotonic()
    code, tests, tail = run_suite(lab, profile, also, failfast=bool(expected),
                                  reports=reports / name, timeout=timeout)
    verdict = Verdict(name, description, expected, seconds=time.monotonic() - began)
    if not tests:
        verdict.reasons = {"pytest": f"exit {code}: no verdicts recorded\n{tail}"}
        return verdict
    failed = sorted({str(f) for t in tests.values() if t["outcome"] == "failed"
                     for f in t["features"]})  # type: ignore[attr-defined]
    verdict.failed = tuple(failed)
    verdict.reasons = {nodeid.split("::")[-1]: str(t["reason"]) for nodeid, t in tests.items()
                       if t["outcome"] == "failed"}
    verdict.verdict = judge(expected, failed)
    return verdict


# A run of the catalogue: an entry, or the lab as the manifests define it in a profile.
Entry = catalogue_mod.Mutant | str  # str: the profile of a baseline


def _name(entry: Entry) -> str:
    if isinstance(entry, str):
        return "baseline" if entry == "tutorial" else f"baseline-{entry}"
    return entry.name


class _Worker(threading.Thread):
    def __init__(self, backend: Backend, lab: str, *,
                 jobs: queue.Queue[Entry], results: list[Verdict],
                 reports: Path, progress: Progress, lock: threading.Lock) -> None:
        super().__init__(daemon=True)
        self.backend, self.lab, self.jobs, self.results = backend, lab, jobs, results
        self.reports, self.progress, self.lock = reports, progress, lock
        self.timeout = RUN_TIMEOUTS.get(backend.name, RUN_TIMEOUT)

    def run(self) -> None:
        while True:
            try:
                mutant = self.jobs.get_nowait()
            except queue.Empty:
                return
            try:
                verdict = self._one(mutant)
            except Exception as exc:  # a mutant that breaks reconfigure is an error verdict
                verdict = Verdict(_name(mutant), "" if isinstance(mutant, str)
                                  else mutant.description, (),
                                  reasons={"reconfigure": str(exc)})
            with self.lock:
                self.results.append(verdict)
                self.progress.say(f"  {verdict.mutant:<28} {verdict.verdict:<12} "
                                  f"failed: {', '.join(verdict.failed) or '-'} "
                                  f"({verdict.seconds:.1f}s, {self.lab})")

    def _one(self, mutant: Entry) -> Verdict:
        quiet = Progress(quiet=True)
        files = [] if isinstance(mutant, str) else [mutant.path]
        self.backend.reconfigure(self.lab, files, quiet)
        try:
            if isinstance(mutant, str):
                return evaluate(_name(mutant), "the lab as the manifests define it", (),
                                lab=self.lab, profile=mutant, reports=self.reports,
                                timeout=self.timeout)
            return evaluate(mutant.name, mutant.description, mutant.expect_fail, lab=self.lab,
                            profile=mutant.profile, reports=self.reports,
                            timeout=self.timeout)
        finally:
            left = sweep_variants(self.backend, self.lab)
            if left:
                self.progress.say(f"  took down variant labs left behind: {', '.join(left)}")


def run(backend_name: str, *, labs: int, only: Sequence[str], reports: Path, prefix: str,
        profile: str | None = None,
        keep: bool, progress: Progress, control_plane: str = "builtin") -> list[Verdict]:
    backend = get_backend(backend_name)
    chosen = [m for m in catalogue_mod.catalogue(profile=profile) if not only or m.name in only]
    unknown = set(only) - {m.name for m in chosen}
    if unknown:
        raise LabError(f"no mutant {', '.join(sorted(unknown))} in the catalogue")
    extended = sorted({m.profile for m in chosen} - {"tutorial"})
    entries: list[Entry] = ["tutorial", *extended, *chosen]
    names = [f"{prefix}-{i}" for i in range(1, max(1, min(labs, len(entries))) + 1)]
    jobs: queue.Queue[Entry] = queue.Queue()
    for entry in entries:
        jobs.put(entry)
    results: list[Verdict] = []
    work = reports / "mutations"
    try:
        for name in names:
            with progress.step(f"up lab {name} on backend {backend_name}"):
                backend.up(UpOptions(name=name, control_plane=control_plane),
                           Progress(quiet=True))
        progress.say(f"{len(entries)} runs ({len(entries) - len(chosen)} baselines + "
                     f"{len(chosen)} catalogue entries) on {len(names)} labs")
        lock = threading.Lock()
        workers = [_Worker(backend, name, jobs=jobs, results=results, reports=work,
                           progress=progress, lock=lock) for name in names]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        if not keep:
            for name in names:
                with contextlib.suppress(Exception):
                    backend.down(name, Progress(quiet=True))
    order = {_name(e): i for i, e in enumerate(entries)}
    results.sort(key=lambda v: order.get(v.mutant, len(order)))
    return results


def write_reports(results: Sequence[Verdict], backend: str, seconds: float,
                  reports: Path) -> tuple[Path, Path]:
    reports.mkdir(parents=True, exist_ok=True)
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    data = {
        "date": when, "backend": backend, "seconds": round(seconds, 1),
        "summary": {v: sum(r.verdict == v for r in results) for v in
                    sorted({r.verdict for r in results})},
        "mutants": [{"mutant": r.mutant, "description": r.description,
                     "expectedToFail": list(r.expected), "failed": list(r.failed),
                     "verdict": r.verdict, "seconds": round(r.seconds, 1),
                     "failures": r.reasons} for r in results],
    }
    yaml_path = reports / "mutations.yaml"
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False, width=100), encoding="utf-8")
    lines = [
        "# Mutation testing of the conformance suite", "",
        f"{when}, backend `{backend}`, {len(results)} runs in {seconds:.0f} s. A mutant is "
        "*caught* when exactly the features it declares fail; a conforming variant "
        "(and the baseline) must pass every feature.", "",
        "| mutant | features expected to fail | features that failed | verdict |",
        "|---|---|---|---|",
    ]
    for r in results:
        mark = r.verdict if r.ok else f"**{r.verdict}**"
        lines.append(f"| `{r.mutant}` | {', '.join(r.expected) or '(none: conforming)'} | "
                     f"{', '.join(r.failed) or '-'} | {mark} |")
    bad = [r for r in results if not r.ok]
    if bad:
        lines += ["", "## Not as declared", ""]
        for r in bad:
            lines.append(f"- `{r.mutant}` ({r.verdict}): " + "; ".join(
                f"{test}: {reason}" for test, reason in r.reasons.items()))
    md_path = reports / "mutations.md"
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md_path, yaml_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.mutations", description=__doc__)
    parser.add_argument("--backend", default="local", help=f"one of {', '.join(BACKENDS)}")
    parser.add_argument("--labs", type=int, default=2, help="labs run side by side (default 2)")
    parser.add_argument("--only", default="", help="comma-separated mutant names")
    parser.add_argument("--reports", default="reports", type=Path)
    parser.add_argument("--prefix", default="mutations", help="lab name prefix")
    parser.add_argument("--keep", action="store_true", help="leave the labs up")
    parser.add_argument("--control-plane", default="builtin", choices=("builtin", "istiod"),
                        help="local: who applies the EnvoyFilters (default: builtin)")
    parser.add_argument("--profile", default=None, choices=sorted(PROFILES),
                        help="only the catalogue entries of this profile (default: all)")
    args = parser.parse_args(argv)
    progress = Progress()
    began = time.monotonic()
    try:
        only = [n.strip() for n in args.only.split(",") if n.strip()]
        results = run(args.backend, labs=args.labs, only=only, reports=args.reports,
                      prefix=args.prefix, keep=args.keep, progress=progress,
                      control_plane=args.control_plane, profile=args.profile)
    except LabError as exc:
        print(f"mutations: error: {exc}", file=sys.stderr)
        return 2
    label = args.backend + ("" if args.control_plane == "builtin" else " (control plane istiod)")
    md, data = write_reports(results, label, time.monotonic() - began, args.reports)
    bad = [r for r in results if not r.ok]
    progress.say(f"{len(results) - len(bad)}/{len(results)} as declared in "
                 f"{time.monotonic() - began:.0f}s; reports: {md}, {data}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
