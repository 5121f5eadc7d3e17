"""TopologyDiscovery: from the seed list alone, the proxy knows the cluster and routes each
key itself to the node that owns its slot."""

from __future__ import annotations

import allure
import pytest
from redis.crc import key_slot

from .support.keys import (
    errors,
    moved_and_ask_by_node,
    run_keys,
    show,
    text,
    through_proxy,
    wait_all_replicated,
    wait_proxy_settled,
)


@pytest.mark.feature("TopologyDiscovery")
def test_proxy_hosts_equal_cluster_slots(lab):
    """The proxy's hosts are exactly the nodes CLUSTER SLOTS reports, all healthy"""
    with allure.step(f"CLUSTER INFO on {lab.nodes[0].name} at {lab.address(lab.nodes[0])}: "
                     "cluster_state:ok, 3 shards"):
        info = text(lab.client(lab.nodes[0]).execute_command("CLUSTER", "INFO")) or ""
        assert "cluster_state:ok" in info
        assert "cluster_size:3" in info
    with allure.step("CLUSTER SLOTS: 3 shards covering 16384 slots, one replica each"):
        cluster = lab.topology
        assert len(cluster.shards) == 3
        assert all(len(shard.replicas) == 1 for shard in cluster.shards)
        assert sum(last - first + 1 for s in cluster.shards for first, last in s.slots) == 16384
    with allure.step("Envoy admin /clusters: the hosts of custom-redis-cluster"):
        hosts = lab.proxy_hosts()
    assert set(hosts) == {node.address for node in cluster.nodes}
    assert set(hosts.values()) == {"healthy"}


@pytest.mark.feature("TopologyDiscovery")
def test_each_key_is_executed_by_the_node_owning_its_slot(lab):
    """set/get through the proxy: MONITOR on all six nodes shows each key executed by its slot's
    master (reads by a node of its shard), and no node answered MOVED or ASK"""
    topology = lab.topology
    with run_keys(lab) as keys:
        written = keys.spread(topology, per_shard=16)
        values = {key: keys.value() for key in written}
        wait_proxy_settled(lab, written)
        before = moved_and_ask_by_node(lab)
        with lab.monitor(lab.nodes) as capture:
            with allure.step(f"set {len(written)} random binary keys through the proxy"):
                replies = through_proxy(lab, [("SET", k, v) for k, v in values.items()])
            wait_all_replicated(lab)  # reads may go to replicas
            with allure.step("get them back through the proxy"):
                got = through_proxy(lab, [("GET", k) for k in written])
        after = moved_and_ask_by_node(lab)
        assert not errors(replies), f"the client saw errors: {errors(replies)[:3]}"
        assert got == [values[k] for k in written], "a value read back is not the one written"
        moved = {name: after[name] - before[name] for name in after if after[name] > before[name]}
        assert not moved, f"nodes answered MOVED/ASK to the proxy: {moved}"
        sets: dict[bytes, set[str]] = {}
        gets: dict[bytes, set[str]] = {}
        for entry in capture.entries:
            if entry.replicated or entry.key not in values:
                continue
            target = sets if entry.command == "SET" else gets if entry.command == "GET" else None
            if target is not None:
                target.setdefault(entry.key, set()).add(entry.node)
        for key in written:
            shard = topology.shard_for_slot(key_slot(key))
            assert sets.get(key) == {shard.master.name}, \
                f"SET {show(key)} (slot {key_slot(key)}) executed by {sets.get(key)}, " \
                f"not by its master {shard.master.name} alone"
            assert gets.get(key) and gets[key] <= {n.name for n in shard.nodes}, \
                f"GET {show(key)} executed by {gets.get(key)}, not by its shard"
