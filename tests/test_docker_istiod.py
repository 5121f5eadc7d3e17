"""Real istiod configuring the docker lab's sidecar: the tutorial's command through the capture,
the tutorial profile on pod IPs, istiod listening only on the lab network, nothing left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab import procs
from lab.backends.docker import engine
from lab.controlplane import pilot
from lab.state import LabState
from tests.conftest import ROOT, cli, needs_binaries, short_registry
from tests.docker_support import lab_objects, requires_docker

needs_istiod = pytest.mark.skipif(pilot.find() is None,
                                  reason=f"istiod is not installed ({pilot.INSTALL_HINT})")
# every test uses the module's lab: under pytest-xdist with --dist loadgroup (as `nox -s
# tests` runs) one worker runs them all, so the lab is brought up once
pytestmark = [needs_binaries, requires_docker(), needs_istiod,
              pytest.mark.xdist_group("test_docker_istiod.istiod_lab")]

LAB = "docker-istiod"


@pytest.fixture(scope="module")
def istiod_lab() -> Iterator[LabState]:
    with short_registry() as home:
        previous = os.environ.get("REDIS_MESH_LAB_HOME")
        os.environ["REDIS_MESH_LAB_HOME"] = str(home)
        pids: list[int] = []
        up = cli("up", "--backend", "docker", "--control-plane", "istiod", "--name", LAB)
        try:
            assert up.returncode == 0, up.stderr
            assert "istiod's push holds what every EnvoyFilter asks for ... ok" in up.stderr
            state = LabState.load(LAB)
            assert state is not None
            pids = [p.pid for p in state.processes]
            yield state
        finally:
            down = cli("down", "--name", LAB)
            assert down.returncode == 0, down.stderr
            assert lab_objects(LAB, engine.home_id()) == ([], [])
            assert not any(procs.running(pid) for pid in pids)
            if previous is None:
                del os.environ["REDIS_MESH_LAB_HOME"]
            else:
                os.environ["REDIS_MESH_LAB_HOME"] = previous


def test_envoy_is_configured_only_by_istiod(istiod_lab: LabState):
    assert istiod_lab.control_plane.name == "istiod"
    boot = json.loads((Path(istiod_lab.directory) / "sidecar" / "envoy.json").read_text())
    assert [c["name"] for c in boot["static_resources"]["clusters"]] == ["xds-grpc"]
    assert "listeners" not in boot["static_resources"]
    assert boot["node"]["metadata"]["INTERCEPTION_MODE"] == "REDIRECT"


def test_istiod_listens_only_on_the_lab_networks_gateway(istiod_lab: LabState):
    istiod = next(p for p in istiod_lab.processes if p.name == "istiod")
    out = subprocess.run(["ss", "-ltnupH"], capture_output=True, text=True, check=True).stdout
    listening = [line.split()[4] for line in out.splitlines() if f"pid={istiod.pid}," in line]
    gateway = istiod_lab.docker_facts().subnet.rsplit(".", 1)[0] + ".1:"
    assert listening and all(a.startswith(gateway) for a in listening), listening


def test_the_tutorial_command_works_through_the_capture(istiod_lab: LabState):
    client = istiod_lab.docker_facts().containers["redis-client"]
    for argv in (["set", "a", "a"], ["get", "a"]):
        run = subprocess.run(["docker", "exec", client, "redis-cli", "-h", "redis-cluster",
                              *argv], capture_output=True, text=True, timeout=60, check=False)
        assert run.stdout.strip() in ("OK", "a"), run.stdout + run.stderr


def test_tutorial_profile_passes_with_istiod(istiod_lab: LabState, tmp_path: Path):
    reports = tmp_path / "reports"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q",
         "--lab-backend", "attach", "--lab-name", LAB, f"--lab-reports={reports}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]

    report = yaml.safe_load((reports / "latest" / "conformance.yaml").read_text())
    assert report["implementation"]["backend"] == "docker"
    assert report["implementation"]["controlPlane"].startswith("istiod")
    assert report["profiles"][0]["result"] == "success"
