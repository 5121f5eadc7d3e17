"""A local lab whose Envoy is configured only by real istiod, end to end through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from lab import procs
from lab.controlplane import pilot
from tests.conftest import ROOT, cli, lab_pids, needs_binaries

needs_istiod = pytest.mark.skipif(pilot.find() is None,
                                  reason=f"istiod not installed ({pilot.INSTALL_HINT})")
pytestmark = [needs_binaries, needs_istiod]


def _listening(pid: int) -> list[str]:
    """Local addresses a process listens on (TCP and UDP), from `ss`."""
    out = subprocess.run(["ss", "-ltnupH"], capture_output=True, text=True, check=True).stdout
    return [line.split()[4] for line in out.splitlines() if f"pid={pid}," in line]


def test_istiod_lab_is_configured_only_by_istiod(no_leaks: Path) -> None:
    up = cli("up", "--name", "cp-istiod", "--control-plane", "istiod")
    assert up.returncode == 0, up.stderr
    assert "istiod's push holds what every EnvoyFilter asks for ... ok" in up.stderr
    pids = lab_pids(no_leaks)
    try:
        state = json.loads((no_leaks / "cp-istiod" / "state.json").read_text())
        vip = state["local"]["vips"]["redis-cluster"]
        assert (state["proxy"]["host"], state["proxy"]["port"]) == (vip, 6379)  # VIP:6379
        assert state["control_plane"]["name"] == "istiod"
        names = {p["name"]: p["pid"] for p in state["processes"]}
        assert {"istiod", "dns", "envoy"} <= set(names)

        boot = json.loads((no_leaks / "cp-istiod" / "envoy.json").read_text())
        assert [c["name"] for c in boot["static_resources"]["clusters"]] == ["xds-grpc"]
        assert "listeners" not in boot["static_resources"]  # everything else comes over ADS

        block = vip.rsplit(".", 1)[0] + "."
        for name in ("istiod", "dns"):
            addresses = _listening(names[name])
            assert addresses and all(a.startswith(block) for a in addresses), (name, addresses)

        client = redis.Redis(vip, 6379, protocol=2, socket_timeout=5)
        for key in "abcdefgh":
            assert client.set(key, key)
        assert client.get("h") == b"h"
        client.close()

        status = cli("status", "--name", "cp-istiod")
        assert "control plane: Istio 1.31" in status.stdout
    finally:
        down = cli("down", "--name", "cp-istiod")
    assert down.returncode == 0
    assert not any(procs.running(pid) for pid in pids)


def test_an_envoyfilter_istiod_ignores_is_named(no_leaks: Path, tmp_path: Path) -> None:
    """The failure proof: istiod silently ignores a patch that matches nothing; `up` does not."""
    source = (ROOT / "manifests" / "istio" / "envoyfilter-redis-proxy-with-mirror.yaml")
    broken = tmp_path / "proxy.yaml"
    broken.write_text(source.read_text().replace("name: envoy.filters.network.tcp_proxy",
                                                 "name: envoy.tcp_proxy"))
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from lab import model; "
         f"model.PROXY_FILTER_WITH_MIRROR = {str(broken)!r}; "
         "from lab.cli import main; sys.exit(main(sys.argv[1:]))",
         "up", "--name", "cp-ignored", "--control-plane", "istiod", "--quiet"],
        capture_output=True, text=True, cwd=ROOT, timeout=180, check=False,
        env=dict(os.environ))
    assert run.returncode == 2, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert "istiod ignored an EnvoyFilter" in lines[0]
    assert "EnvoyFilter istio-system/add-redis-proxy configPatches[0]" in lines[0]
    assert not (no_leaks / "cp-ignored").exists()


def test_reconfigure_swaps_the_extra_envoyfilters_through_istiod(no_leaks: Path) -> None:
    from lab.backends import get_backend
    from lab.controlplane import compare
    from lab.envoy.admin import Admin
    from lab.progress import Progress
    from lab.state import LabState

    up = cli("up", "--name", "cp-reconf", "--control-plane", "istiod", "--read-policy", "MASTER")
    assert up.returncode == 0, up.stderr
    backend = get_backend("local")

    def read_policy(state: LabState) -> str:
        vip = state.local_facts().vips["redis-cluster"]
        dump = json.loads(Admin.of(state.admin, timeout=5.0).get("/config_dump"))
        filters = compare.parts(dump, vip)[f"listener {vip}_6379 filters"]
        return str(filters[0]["typed_config"]["settings"].get("read_policy", "MASTER"))

    try:
        before = LabState.load("cp-reconf")
        assert before is not None and read_policy(before) == "MASTER"
        istiod_pid = next(p.pid for p in before.processes if p.name == "istiod")
        mutant = ROOT / "tests" / "data" / "read-policy-replica-merge.yaml"
        after = backend.reconfigure("cp-reconf", [mutant], Progress(quiet=True))
        assert read_policy(after) == "REPLICA"  # pushed by the restarted istiod
        assert next(p.pid for p in after.processes if p.name == "istiod") != istiod_pid
        boot = json.loads((no_leaks / "cp-reconf" / "envoy.json").read_text())
        assert "listeners" not in boot["static_resources"]  # still configured over ADS only
        back = backend.reconfigure("cp-reconf", [], Progress(quiet=True))
        assert read_policy(back) == "MASTER"
    finally:
        assert cli("down", "--name", "cp-reconf").returncode == 0
