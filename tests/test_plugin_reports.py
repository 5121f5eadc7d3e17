"""The plugin's verdicts, exit codes and report folders, on small suites that need no lab."""

from __future__ import annotations

import json
import os
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


def _pytest(tmp_path: Path, *args: str, suite: str = SUITE) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_suite.py").write_text(suite)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_MESH_LAB_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**clean, "PYTHONPATH": str(ROOT)},
    )


def _report(root: Path) -> dict:
    return yaml.safe_load((root / "latest" / "conformance.yaml").read_text())["profiles"][0]


def test_uncovered_features_are_named_and_exit_with_the_plugins_own_code(tmp_path: Path):
    run = _pytest(tmp_path)
    assert run.returncode == EXIT_INCOMPLETE, run.stdout + run.stderr
    assert max(pytest.ExitCode) < EXIT_INCOMPLETE  # never one of pytest's own codes
    profile = _report(tmp_path / "reports")
    assert profile["result"] == "incomplete"
    assert profile["notCovered"] == ["TopologyDiscovery", "ReadPolicyReplica"]
    assert profile["features"]["Sharding"]["result"] == "success"
    assert "not covered (no test proves them): TopologyDiscovery, ReadPolicyReplica" in run.stdout


def test_a_k_selection_is_not_the_whole_profile(tmp_path: Path):
    run = _pytest(tmp_path, "-k", "keys")
    assert run.returncode == 0, run.stdout + run.stderr
    profile = _report(tmp_path / "reports")
    assert profile["ranWhole"] is False
    assert profile["features"]["WriteMirroring"]["result"] == "notRun"
    assert "profile tutorial was NOT run whole (-k keys)" in run.stdout


def test_a_node_id_is_not_the_whole_profile(tmp_path: Path):
    run = _pytest(tmp_path, "test_suite.py::test_writes_are_mirrored")
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
    first = _pytest(tmp_path, "--lab-reports", "out")
    second = _pytest(tmp_path, "--lab-reports", "out", "-k", "mirrored")
    assert first.returncode == EXIT_INCOMPLETE and second.returncode == 0
    runs = sorted(p for p in (tmp_path / "out").iterdir() if not p.is_symlink())
    assert len(runs) == 2
    assert (tmp_path / "out" / "latest").resolve() == runs[1]
    assert yaml.safe_load((runs[0] / "conformance.yaml").read_text())["profiles"][0][
        "ranWhole"] is True  # the first run's evidence is still there
    assert not (tmp_path / "reports").exists()


def test_allure_results_in_the_run_folder_titled_by_sentences(tmp_path: Path):
    run = _pytest(tmp_path)
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
    run = _pytest(tmp_path)
    assert "[100%]\n" in run.stdout, run.stdout
    assert "%]-" not in run.stdout


def test_the_implementation_as_the_report_shows_it():
    from lab.pytest_plugin import implementation_parameters

    shown = implementation_parameters({"backend": "docker", "envoyVersion": "1.40.0",
                                       "readPolicy": "REPLICA", "mirrorEnabled": True})
    assert shown["control plane"] == "builtin patcher"
    assert shown["mirror"] == "on" and shown["extra EnvoyFilters"] == "none"
    kind = implementation_parameters({"backend": "kind", "istioProfile": "tutorial",
                                      "envoyfilters": ["no-mirror.yaml"]})
    assert kind["control plane"] == "istio (tutorial)"
    assert kind["extra EnvoyFilters"] == "no-mirror.yaml"
