"""A mutant lab end to end on the local backend: `up --envoyfilter`, `status` says so,
`reconfigure` swaps the extra EnvoyFilters restarting only Envoy, and the faults API."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import mutants, procs
from lab.backends import get_backend
from lab.errors import LabError
from lab.handle import Lab
from lab.progress import Progress
from lab.state import LabState
from tests.conftest import cli, needs_binaries

pytestmark = [needs_binaries]


def test_envoyfilter_reconfigure_and_faults(no_leaks: Path):
    mutant = mutants.get("read-policy-master")
    up = cli("up", "--name", "mutant", "--envoyfilter", str(mutant.path))
    assert up.returncode == 0, up.stderr
    try:
        status = cli("status", "--name", "mutant")
        assert "extra EnvoyFilters (a mutant or variant lab)" in status.stdout, status.stdout
        state = LabState.load("mutant")
        assert state is not None and state.envoyfilters == [str(mutant.path)]
        backend = get_backend("local")
        nodes = {p.name: p.pid for p in state.processes}
        lab = Lab(state, backend.access(state))
        key = b"\x00mutant-lab"
        assert lab.proxy.set(key, b"v")
        with lab.monitor() as capture:
            assert lab.proxy.get(key) == b"v"
        shard = lab.topology.shard_for_key(key)
        assert [e.node for e in capture.entries if e.command == "GET"] == [shard.master.name]

        state = backend.reconfigure("mutant", [], Progress(quiet=True))
        assert state.envoyfilters == []
        after = {p.name: p.pid for p in state.processes}
        assert after["envoy"] != nodes["envoy"]  # only Envoy was restarted
        assert {k: v for k, v in after.items() if k != "envoy"} == \
            {k: v for k, v in nodes.items() if k != "envoy"}
        lab.close()
        lab = Lab(state, backend.access(state))
        with lab.monitor() as capture:
            assert lab.proxy.get(key) == b"v"
        assert [e.node for e in capture.entries if e.command == "GET"] == \
            [r.name for r in shard.replicas]

        replica = shard.replicas[0]
        lab.faults.freeze(replica)
        assert lab.faults.active and lab.faults.active[0].action == "freeze"
        lab.faults.kill(shard.replicas[0].name)
        assert not procs.alive(next(p for p in state.processes if p.name == replica.name))
        with pytest.raises(LabError, match="cannot cut one off"):
            lab.faults.isolate(replica)
        reverted = lab.faults.undo_all()
        assert [f.action for f in reverted] == ["kill", "freeze"]
        assert not lab.faults.active
        assert lab.client(replica).ping()
        assert lab.wait_replicated(shard.master) >= 1
        lab.close()
    finally:
        cli("down", "--name", "mutant")


def test_envoyfilter_must_exist(no_leaks: Path, tmp_path: Path):
    result = cli("up", "--name", "nofile", "--envoyfilter", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "--envoyfilter" in result.stderr and "no such file" in result.stderr
