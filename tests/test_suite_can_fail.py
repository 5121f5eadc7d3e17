"""The conformance suite fails labs that break a claim, and only the claims they break.

Each case brings a lab up with the CLI, runs the suite against it (`--backend attach`) in a
separate pytest, and reads the conformance report and the Allure results it wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab import mutants
from lab.mutations import evaluate
from lab.paths import manifests_dir
from tests.conftest import ROOT, cli, needs_binaries

pytestmark = [needs_binaries]

TUTORIAL = ("TopologyDiscovery", "Sharding", "ReadPolicyReplica", "WriteMirroring")


def _run_suite(home: Path, name: str, out: Path, *extra: str) -> tuple[int, dict, Path]:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q",
         "--lab-backend", "attach", "--lab-name", name, f"--lab-reports={out / 'reports'}",
         *extra],
        cwd=out, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "REDIS_MESH_LAB_HOME": str(home), "PYTHONPATH": str(ROOT)},
    )
    report = out / "reports" / "latest" / "conformance.yaml"
    results = out / "reports" / "latest" / "allure-results"
    assert report.is_file(), run.stdout + run.stderr
    return run.returncode, yaml.safe_load(report.read_text()), results


def _with_lab(home: Path, tmp_path: Path, name: str, *up_args: str):
    up = cli("up", "--name", name, *up_args)
    assert up.returncode == 0, up.stderr
    try:
        (tmp_path / "suites").symlink_to(ROOT / "suites")
        return _run_suite(home, name, tmp_path)
    finally:
        cli("down", "--name", name)


def _results(report: dict) -> dict[str, str]:
    return {f: v["result"] for f, v in report["profiles"][0]["features"].items()}


def test_a_conforming_lab_passes_every_feature(no_leaks: Path, tmp_path: Path):
    code, report, _ = _with_lab(no_leaks, tmp_path, "good")
    assert code == 0
    assert _results(report) == dict.fromkeys(TUTORIAL, "success")
    assert report["implementation"]["backend"] == "local"
    assert report["implementation"]["envoyVersion"]


def test_read_policy_master_fails_replica_reads_only(no_leaks: Path, tmp_path: Path):
    code, report, results = _with_lab(no_leaks, tmp_path, "master", "--read-policy", "MASTER")
    assert code == 1
    assert _results(report) == {"TopologyDiscovery": "success", "Sharding": "success",
                                "ReadPolicyReplica": "failure", "WriteMirroring": "success"}
    failed = [t["test"] for t in report["profiles"][0]["failedTests"]]
    assert failed == ["suites/test_read_policy.py::test_reads_reach_only_the_replica",
                      "suites/test_read_policy.py::"
                      "test_replica_down_reads_are_not_served_by_the_master"]
    # the failure carries its evidence: MONITOR capture and Envoy/cluster diagnostics
    result = next(json.loads(p.read_text()) for p in results.glob("*-result.json")
                  if "test_reads_reach_only_the_replica" in p.read_text())
    names = {a["name"] for a in result.get("attachments", [])}
    assert {"MONITOR capture", "envoy-config_dump.json", "envoy-clusters.txt",
            "envoy-redis-stats.txt", "cluster-nodes.txt"} <= names
    labels = {(label["name"], label["value"]) for label in result["labels"]}
    assert ("feature", "ReadPolicyReplica") in labels
    assert ("epic", "redis-mesh-lab conformance") in labels


def test_no_mirror_fails_write_mirroring_only(no_leaks: Path, tmp_path: Path):
    code, report, _ = _with_lab(no_leaks, tmp_path, "nomirror", "--no-mirror")
    assert code == 1
    assert _results(report) == {"TopologyDiscovery": "success", "Sharding": "success",
                                "ReadPolicyReplica": "success", "WriteMirroring": "failure"}


@pytest.mark.parametrize("profile", ["extended"])
def test_features_outside_the_profile_are_skipped_and_reported(no_leaks: Path, tmp_path: Path,
                                                                profile: str):
    up = cli("up", "--name", "profiles")
    assert up.returncode == 0, up.stderr
    try:
        (tmp_path / "suites").symlink_to(ROOT / "suites")
        code, report, _ = _run_suite(no_leaks, "profiles", tmp_path, "--lab-profile", profile,
                                     "--ignore-glob=*test_ext_*")  # the tutorial's tests
    finally:
        cli("down", "--name", "profiles")
    # extended features without tests make the profile "not proven" (exit 12), never a pass
    assert code in (0, 12), report
    tutorial_tests = [t for t in report["profiles"][0]["skippedTests"]
                      if set(t["features"]) <= set(TUTORIAL)]
    assert len(tutorial_tests) >= 8
    assert all("not in profile extended" in t["reason"] for t in tutorial_tests)


def test_ignored_proxy_patch_is_refused_by_up(no_leaks: Path, tmp_path: Path):
    """Istio drops an EnvoyFilter patch that matches nothing; the listener stays tcp_proxy.

    Simulated by a copy of the manifests whose redis-proxy EnvoyFilter has no patches. `up`
    refuses such a lab in one line naming the file (readiness proves the proxy); the suite's
    own failure proof for it is the `tcp-proxy-left` mutant, run with `--envoyfilter`.
    """
    copy = tmp_path / "manifests"
    shutil.copytree(manifests_dir(), copy)
    target = copy / "istio" / "envoyfilter-redis-proxy-with-mirror.yaml"
    document = yaml.safe_load(target.read_text())
    document["spec"]["configPatches"] = []
    target.write_text(yaml.safe_dump(document))
    up = cli("up", "--name", "ignored", env={"REDIS_MESH_LAB_MANIFESTS": str(copy)})
    assert up.returncode == 2, up.stderr
    assert "istio/envoyfilter-redis-proxy-with-mirror.yaml" in up.stderr.splitlines()[-1]
    assert not (no_leaks / "ignored").exists()


# A few entries of the catalogue (manifests/mutants/), one per kind of breakage: `nox -s
# mutations` runs them all; here each is brought up with `up --envoyfilter` and judged by the
# same verdict recorder.
CATALOGUE_SAMPLE = ("tcp-proxy-left", "catch-all-to-passthrough", "mirror-fraction-99",
                    "read-policy-prefer-replica", "no-redirection", "seed-one-replica")


@pytest.mark.parametrize("name", CATALOGUE_SAMPLE)
def test_catalogue_mutants_fail_exactly_what_they_declare(no_leaks: Path, tmp_path: Path,
                                                          name: str):
    mutant = mutants.get(name)
    up = cli("up", "--name", "mutant", "--envoyfilter", str(mutant.path))
    assert up.returncode == 0, up.stderr
    try:
        verdict = evaluate(mutant.name, mutant.description, mutant.expect_fail, lab="mutant",
                           profile=mutant.profile, reports=tmp_path)
    finally:
        cli("down", "--name", "mutant")
    assert verdict.verdict == ("passed" if mutant.conforming else "caught"), verdict
    assert set(verdict.failed) == set(mutant.expect_fail)
