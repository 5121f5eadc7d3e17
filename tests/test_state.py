"""The journal state.json: typed facts per backend survive a save and a load; a journal of
another version is refused in one line naming the file, and its backend can still be read so
that `down` reaches what the lab left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.state import (
    STATE_VERSION,
    AdminEndpoint,
    ControlPlaneFacts,
    CorruptState,
    DockerFacts,
    KubeFacts,
    LabState,
    LocalFacts,
    LocalPorts,
    MirrorEndpoint,
    ProxyEndpoint,
    recorded_backend,
)


def _states() -> list[LabState]:
    local = LabState.starting("l1", "local", "REPLICA", True)
    local.proxy = ProxyEndpoint(host="127.0.0.1", port=7100)
    local.admin = AdminEndpoint(socket="/tmp/envoy-admin.sock")
    local.mirror = MirrorEndpoint(host="127.0.0.1", port=7101)
    local.local = LocalFacts(ports=LocalPorts(nodes=[7001, 7002], mirror=7101, proxy=7100),
                             names_by_address={"127.0.0.1:7001": "redis-cluster-0"},
                             vips={"redis-cluster": "127.0.10.1"}, envoy_config="/tmp/e.json")
    local.control_plane = ControlPlaneFacts(name="istiod", istiod_http="127.0.20.9:15014",
                                            loopback_block=20, unmatched_envoyfilters=["x"])
    docker = LabState.starting("d1", "docker", "ANY", False)
    docker.spares = [{"name": "redis-cluster-6", "host": "10.1.0.8", "port": 6379}]
    docker.docker = DockerFacts(network="rml-d1", ips={"redis-cluster-0": "10.1.0.2"},
                                aliases={"redis-cluster-0": ["redis-cluster-0.redis"]},
                                containers={"redis-client": "rml-d1-redis-client"})
    kube = LabState.starting("k1", "kind", "REPLICA", True)
    kube.kube = KubeFacts(kubeconfig="/tmp/kc", context="kind-rml-k1", cluster="rml-k1",
                          client_pod="redis-client-abc", sync_generation=3,
                          applied=[{"kind": "EnvoyFilter", "metadata": {"name": "f"}}])
    return [local, docker, kube]


@pytest.mark.parametrize("state", _states(), ids=lambda s: s.backend)
def test_typed_facts_survive_save_and_load(lab_home: Path, state: LabState) -> None:
    state.save()
    assert LabState.load(state.name) == state
    assert json.loads((lab_home / state.name / "state.json").read_text())["version"] \
        == STATE_VERSION


def test_a_lab_knows_only_its_own_backends_facts(lab_home: Path) -> None:
    local, docker, kube = _states()
    assert local.local_facts().ports.proxy == 7100
    assert docker.docker_facts().network == "rml-d1"
    assert kube.kube_facts().client_pod == "redis-client-abc"
    assert [n.address for n in docker.spare_nodes] == ["10.1.0.8:6379"]
    with pytest.raises(Exception, match="lab l1 is a local lab, not a kind or existing one"):
        local.kube_facts()


def test_a_journal_of_an_earlier_version_is_one_line_naming_it(lab_home: Path) -> None:
    path = lab_home / "old" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({  # version 1 kept a backend's facts in an untyped `extra`
        "name": "old", "backend": "kind", "read_policy": "REPLICA", "mirror_enabled": True,
        "proxy": {"host": "redis-cluster.redis.svc.cluster.local", "port": 6379},
        "admin": {}, "mirror": {}, "extra": {"kubeconfig": "/tmp/kc", "cluster": "rml-old"}}))
    with pytest.raises(CorruptState) as caught:
        LabState.load("old")
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert "state version 1" in message and "redis-mesh-lab down --name old" in message
    assert recorded_backend("old") == "kind"  # `down` takes the kind cluster down by it


def test_the_backend_of_an_unreadable_journal_is_none(lab_home: Path) -> None:
    (lab_home / "junk").mkdir(parents=True)
    (lab_home / "junk" / "state.json").write_bytes(b"{ not json")
    assert recorded_backend("junk") is None
    assert recorded_backend("absent") is None
