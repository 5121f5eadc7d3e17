"""The conformance suite ships in the wheel as `lab.suites`, and another project runs it, with
its own tests (the README's third-party example), against its own lab."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from tests.conftest import ROOT, cli, needs_binaries, processes_under
from tests.test_plugin_reports import pytest_counts

EXAMPLE = re.compile(r"<!-- third-party-example -->\s*```python\n(.*?)```", re.S)


def readme_example() -> str:
    """The README's third-party test (also type-checked by `nox -s lint`)."""
    found = EXAMPLE.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert found, "README.md has no <!-- third-party-example --> python block"
    return found.group(1)


def test_the_wheel_carries_the_suite_as_lab_suites(tmp_path: Path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("redis_mesh_lab-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    suites = {p.name for p in (ROOT / "suites").glob("*.py")}
    assert {f"lab/suites/{name}" for name in suites} <= names
    assert "lab/_manifests/k8s/redis-cluster.yaml" in names
    assert not any(n.startswith(("tests/", "suites/")) for n in names)
    assert not any("fakes" in n for n in names)  # test doubles stay in tests/


@needs_binaries
def test_another_project_runs_the_shipped_suite_and_its_own_test(no_leaks: Path,
                                                                 tmp_path: Path):
    project = tmp_path / "their-project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\nlab_backend = attach\n")
    (project / "test_their_app.py").write_text(readme_example())
    up = cli("up", "--name", "plugin-3rd")
    assert up.returncode == 0, up.stderr
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
             "--pyargs", "lab.suites", "test_their_app.py", "--lab-reports", "reports"],
            cwd=project, capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "REDIS_MESH_LAB_NAME": "plugin-3rd"},
        )
    finally:
        cli("down", "--name", "plugin-3rd")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = yaml.safe_load((project / "reports" / "latest" / "conformance.yaml").read_text())
    profile = report["profiles"][0]
    assert profile["result"] == "success"
    assert profile["statistics"] == pytest_counts(run.stdout)  # what pytest itself counted
    assert profile["statistics"]["passed"] >= 10  # the shipped tutorial tests and theirs
    assert any("test_their_app.py" in t for t in profile["features"]["Sharding"]["tests"])


@needs_binaries
def test_their_own_tests_alone_get_pytests_exit_code_and_write_nothing(no_leaks: Path,
                                                                      tmp_path: Path):
    """The README's example in a fresh project, on a lab the plugin provisions: no profile was
    asked for, so no verdict and no exit 12; no --lab-reports, so no reports/."""
    project = tmp_path / "their-project"
    project.mkdir()
    (project / "test_their_app.py").write_text(readme_example())
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("REDIS_MESH_LAB_") or k == "REDIS_MESH_LAB_HOME"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", "-q"],
        cwd=project, capture_output=True, text=True, timeout=300, check=False, env=clean)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout
    assert "conformance profile" not in run.stdout
    assert sorted(p.name for p in project.iterdir()) == ["test_their_app.py"]
    assert processes_under(str(no_leaks)) == []
