"""Under pytest-xdist every worker provisions its own lab, named after the run's; the report is
aggregated, its statistics are pytest's own counts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT, needs_binaries, processes_under
from tests.test_plugin_reports import pytest_counts

pytestmark = [needs_binaries]


def test_two_workers_two_labs_one_report(no_leaks: Path, tmp_path: Path):
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "suites"), "-p", "no:cacheprovider", "-q",
         "-n", "2", "--lab-name", "xdist", "--lab-reports=reports"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "REDIS_MESH_LAB_HOME": str(no_leaks), "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = yaml.safe_load((tmp_path / "reports/latest/conformance.yaml").read_text())
    assert data["labs"] == ["xdist-gw0", "xdist-gw1"]
    assert data["profiles"][0]["result"] == "success"
    assert data["profiles"][0]["statistics"] == pytest_counts(run.stdout)
    assert data["profiles"][0]["statistics"]["passed"] >= 9  # the tutorial tests
    assert processes_under(str(no_leaks)) == []
