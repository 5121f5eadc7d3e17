"""The plugin's verdicts, exit codes and report folders, on small suites that need no lab.

A verdict is asked for with --lab-profile (the shipped suite asks by itself: see
test_shipped_suite.py); reports are written only into --lab-reports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.pytest_plugin import EXIT_INCOMPLETE
from tests.conftest import ROOT

SUITE = '''
import pytest

@pytest.mark.feature("Sharding")
def test_keys_land_on_their_owner():
    """Every key lands on the master that owns its slot"""

@pytest.mark.feature("WriteMirroring")
def test_writes_are_mirrored():
    """Every write reaches the mirror"""

def test_not_a_conformance_test():
    pass
'''


VERDICT = ("--lab-profile", "tutorial", "--lab-reports", "reports")


def _pytest(tmp_path: Path, *args: str, suite: str = SUITE,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_suite.py").write_text(suite)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_MESH_LAB_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def _written(project: Path) -> list[str]:
    """What the run left in the project (pytest-benchmark's own .benchmarks is not ours)."""
    return sorted(p.name for p in project.iterdir() if p.name not in ("test_suite.py",
                                                                       ".benchmarks"))


def _report(root: Path) -> dict:
    return yaml.safe_load((root / "latest" / "conformance.yaml").read_text())["profiles"][0]


def test_uncovered_features_are_named_and_exit_with_the_plugins_own_code(tmp_path: Path):
    run = _pytest(tmp_path, *VERDICT)
    assert run.returncode == EXIT_INCOMPLETE, run.stdout + run.stderr
    assert max(pytest.ExitCode) < EXIT_INCOMPLETE  # never one of pytest's own codes
    profile = _report(tmp_path / "reports")
    assert profile["result"] == "incomplete"
    assert profile["notCovered"] == ["TopologyDiscovery", "ReadPolicyReplica"]
    assert profile["features"]["Sharding"]["result"] == "success"
    assert "not covered (no test proves them): TopologyDiscovery, ReadPolicyReplica" in run.stdout


def test_a_k_selection_is_not_the_whole_profile(tmp_path: Path):
    run = _pytest(tmp_path, *VERDICT, "-k", "keys")
    assert run.returncode == 0, run.stdout + run.stderr
    profile = _report(tmp_path / "reports")
    assert profile["ranWhole"] is False
    assert profile["features"]["WriteMirroring"]["result"] == "notRun"
    assert "profile tutorial was NOT run whole (-k keys)" in run.stdout


def test_a_node_id_is_not_the_whole_profile(tmp_path: Path):
    run = _pytest(tmp_path, *VERDICT, "test_suite.py::test_writes_are_mirrored")
    assert run.returncode == 0, run.stdout + run.stderr
    assert _report(tmp_path / "reports")["selection"] == [
        "node id test_suite.py::test_writes_are_mirrored"]


def test_an_unknown_feature_lists_the_valid_ones(tmp_path: Path):
    suite = 'import pytest\n\n@pytest.mark.feature("Shardin")\ndef test_x():\n    pass\n'
    run = _pytest(tmp_path, suite=suite)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR
    out = run.stdout + run.stderr
    assert "unknown feature 'Shardin'" in out
    assert "valid features: TopologyDiscovery, Sharding, ReadPolicyReplica" in out


def test_each_run_gets_its_own_folder_and_latest_points_at_the_newest(tmp_path: Path):
    first = _pytest(tmp_path, "--lab-profile", "tutorial", "--lab-reports", "out")
    second = _pytest(tmp_path, "--lab-profile", "tutorial", "--lab-reports", "out",
                     "-k", "mirrored")
    assert first.returncode == EXIT_INCOMPLETE and second.returncode == 0
    runs = sorted(p for p in (tmp_path / "out").iterdir() if not p.is_symlink())
    assert len(runs) == 2
    assert (tmp_path / "out" / "latest").resolve() == runs[1]
    assert yaml.safe_load((runs[0] / "conformance.yaml").read_text())["profiles"][0][
        "ranWhole"] is True  # the first run's evidence is still there
    assert not (tmp_path / "reports").exists()


def test_allure_results_in_the_run_folder_titled_by_sentences(tmp_path: Path):
    run = _pytest(tmp_path, *VERDICT)
    assert run.returncode == EXIT_INCOMPLETE, run.stdout + run.stderr
    results = tmp_path / "reports" / "latest" / "allure-results"
    titles = {json.loads(p.read_text())["name"] for p in results.glob("*-result.json")}
    assert titles >= {"Every key lands on the master that owns its slot",
                      "Every write reaches the mirror"}


def test_a_run_without_feature_tests_writes_nothing(tmp_path: Path):
    run = _pytest(tmp_path, suite="def test_plain():\n    pass\n")
    assert run.returncode == 0
    assert not (tmp_path / "reports").exists()


def test_the_summary_starts_on_its_own_line_after_quiet_progress(tmp_path: Path):
    run = _pytest(tmp_path, *VERDICT)
    assert "[100%]\n" in run.stdout, run.stdout
    assert "%]-" not in run.stdout


def test_feature_tests_without_a_profile_get_pytests_own_exit_code_and_no_verdict(
        tmp_path: Path):
    """A project's own feature tests, no --lab-profile: pytest's verdict, nothing skipped."""
    suite = SUITE + ('\n@pytest.mark.feature("Failover")\ndef test_failover():\n'
                     '    """Outside the tutorial profile"""\n')
    run = _pytest(tmp_path, "-rs", suite=suite)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout, run.stdout  # Failover is not skipped: no profile asked
    assert "conformance profile" not in run.stdout
    assert _written(tmp_path) == []


def test_the_profile_from_the_environment_asks_for_a_verdict(tmp_path: Path):
    run = _pytest(tmp_path, env={"REDIS_MESH_LAB_PROFILE": "tutorial"})
    assert run.returncode == EXIT_INCOMPLETE, run.stdout + run.stderr
    assert "conformance profile tutorial: incomplete" in run.stdout


def test_a_verdict_without_reports_dir_writes_nothing_and_says_so(tmp_path: Path):
    run = _pytest(tmp_path, "--lab-profile", "tutorial")
    assert run.returncode == EXIT_INCOMPLETE, run.stdout + run.stderr
    assert _written(tmp_path) == []
    assert ("redis-mesh-lab wrote no reports (conformance.yaml, Allure results, failure "
            "diagnostics): --lab-reports DIR writes them") in run.stdout


COUNTED = '''
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("setup fails")

@pytest.mark.feature("Sharding")
def test_passes():
    pass

def test_passes_too():
    pass

@pytest.mark.feature("Sharding")
def test_fails():
    assert False

@pytest.mark.feature("WriteMirroring")
def test_errors(broken):
    pass

@pytest.mark.feature("WriteMirroring")
def test_skips():
    pytest.skip("no")

@pytest.mark.feature("ReadPolicyReplica")
@pytest.mark.xfail(strict=True, reason="envoyproxy/envoy#22729: known")
def test_xfails():
    assert False

@pytest.mark.feature("ReadPolicyReplica")
@pytest.mark.xfail(reason="flaky")
def test_xpasses():
    pass

@pytest.mark.feature("Failover")
def test_outside_the_profile():
    pass
'''
SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?)\b")


def pytest_counts(stdout: str) -> dict[str, int]:
    """pytest's own summary line ("1 failed, 2 passed, 1 skipped, ... in 0.1s") as a dict."""
    line = next(line for line in reversed(stdout.splitlines()) if " in " in line)
    counts = dict.fromkeys(("passed", "failed", "skipped", "xfailed", "xpassed", "errors"), 0)
    for number, word in SUMMARY.findall(line):
        counts["errors" if word.startswith("error") else word] = int(number)
    return counts


def test_statistics_are_pytests_own_counts(tmp_path: Path):
    run = _pytest(tmp_path, *VERDICT, suite=COUNTED)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout + run.stderr
    profile = _report(tmp_path / "reports")
    assert profile["statistics"] == pytest_counts(run.stdout)
    assert profile["statistics"] == {"passed": 2, "failed": 1, "skipped": 2, "xfailed": 1,
                                     "xpassed": 1, "errors": 1}
    assert profile["knownFailures"] == [{
        "test": "test_suite.py::test_xfails", "features": ["ReadPolicyReplica"],
        "reason": "xfail: envoyproxy/envoy#22729: known",
        "links": ["https://github.com/envoyproxy/envoy/issues/22729"]}]
    assert profile["features"]["ReadPolicyReplica"]["knownFailures"] == [
        "test_suite.py::test_xfails"]


def test_the_implementation_as_the_report_shows_it():
    from lab.pytest_plugin import implementation_parameters

    shown = implementation_parameters({"backend": "docker", "envoyVersion": "1.40.0",
                                       "readPolicy": "REPLICA", "mirrorEnabled": True})
    assert shown["control plane"].startswith("builtin patcher (redis-mesh-lab ")
    assert shown["mirror"] == "on" and shown["extra EnvoyFilters"] == "none"
    kind = implementation_parameters({"backend": "kind", "istioProfile": "tutorial",
                                      "envoyfilters": ["no-mirror.yaml"]})
    assert kind["control plane"] == "istio (tutorial)"
    assert kind["extra EnvoyFilters"] == "no-mirror.yaml"


WAITING = '''
import time

import pytest

from lab import waits

@pytest.mark.feature("Sharding")
def test_waits_on_replication():
    with waits.waiting(waits.REPLICATION):
        with waits.waiting(waits.MONITOR):  # inside an outer wait: counted under its timer
            time.sleep(0.05)

@pytest.mark.feature("WriteMirroring")
def test_waits_on_the_refresh_twice():
    for _ in range(2):
        with waits.waiting(waits.REFRESH):
            time.sleep(0.02)
'''


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_what_the_tests_waited_on_is_in_the_report_per_timer(tmp_path: Path, workers):
    run = _pytest(tmp_path, *VERDICT, *workers, suite=WAITING)
    assert run.returncode == EXIT_INCOMPLETE, run.stdout
    waited = _report(tmp_path / "reports")["waits"]
    assert set(waited) == {"replication", "cluster_refresh_rate"}  # nothing under monitor
    assert waited["replication"]["count"] == 1 and waited["replication"]["seconds"] >= 0.05
    assert waited["cluster_refresh_rate"]["count"] == 2
    assert waited["cluster_refresh_rate"]["seconds"] >= 0.04
