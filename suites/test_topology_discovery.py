"""TopologyDiscovery: from the seed list alone, the proxy knows the cluster."""

from __future__ import annotations

import allure
import pytest

from .keys import ok, per_shard, text


@pytest.mark.feature("TopologyDiscovery")
def test_proxy_hosts_equal_cluster_slots(lab):
    """The proxy's hosts are exactly the nodes CLUSTER SLOTS reports, all healthy"""
    with allure.step(f"CLUSTER INFO on {lab.nodes[0].name} at {lab.address(lab.nodes[0])}: "
                     "cluster_state:ok, 3 shards"):
        info = text(lab.client(lab.nodes[0]).execute_command("CLUSTER", "INFO")) or ""
        assert "cluster_state:ok" in info
        assert "cluster_size:3" in info
    with allure.step("CLUSTER SLOTS: 3 shards covering 16384 slots, one replica each"):
        cluster = lab.cluster_slots_topology()
        assert len(cluster.shards) == 3
        assert all(len(shard.replicas) == 1 for shard in cluster.shards)
        assert sum(last - first + 1 for s in cluster.shards for first, last in s.slots) == 16384
    with allure.step("Envoy admin /clusters: the hosts of custom-redis-cluster"):
        hosts = lab.proxy_hosts()
    assert set(hosts) == {node.address for node in cluster.nodes}
    assert set(hosts.values()) == {"healthy"}


@pytest.mark.feature("TopologyDiscovery")
def test_unchanged_client_reaches_every_shard(lab):
    """A plain client that knows nothing of the cluster is served for keys on every shard"""
    keys = per_shard(lab.topology, "discovery", 1)
    for key in keys:
        with allure.step(f"set {key} {key}"):
            assert ok(lab.proxy.execute_command("SET", key, key))
        with allure.step(f"get {key}"):
            assert text(lab.proxy.execute_command("GET", key)) == key
