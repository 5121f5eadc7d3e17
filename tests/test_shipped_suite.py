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

from tests.conftest import ROOT, cli, needs_binaries

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
             "--pyargs", "lab.suites", "test_their_app.py"],
            cwd=project, capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "REDIS_MESH_LAB_NAME": "plugin-3rd"},
        )
    finally:
        cli("down", "--name", "plugin-3rd")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = yaml.safe_load((project / "reports" / "latest" / "conformance.yaml").read_text())
    profile = report["profiles"][0]
    assert profile["result"] == "success"
    assert profile["statistics"]["passed"] == 10  # the 9 shipped tutorial tests and theirs
    assert any("test_their_app.py" in t for t in profile["features"]["Sharding"]["tests"])
