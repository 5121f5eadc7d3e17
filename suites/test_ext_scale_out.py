"""ScaleOut: the StatefulSet scaled up, the new pods joined with `redis-cli --cluster
add-node` (one as a new master, given slots by `rebalance`; one as a second replica of an
existing shard), under an unchanged client, on a variant lab of its own (the session lab is
never reshaped).

The variant lab starts two spare pods (`UpOptions.spare_pods`: running, empty, outside the
cluster, as `kubectl scale statefulset redis-cluster --replicas=8` leaves them). The claims:
Envoy's /clusters shows the new hosts, healthy, within its refresh bound; keys of the slots that
moved are written and read through the proxy with no client error or MOVED and are served by
the new master; reads of the grown shard are shared by both of its replicas.
"""

from __future__ import annotations

import time

import allure
import pytest

from lab.conformance.variants import Variant
from lab.slots import key_slot

from .support.keys import ok, text, token
from .support.reads import binomial_tail

# PREFER_REPLICA: the new shard has no replica, so REPLICA would refuse its reads; the grown
# shard's reads still go to its replicas (two of them), which is what is checked there
SCALE_OUT = Variant("scale-out", read_policy="PREFER_REPLICA", spare_pods=2)
NEW_WEIGHT = "0.1"  # the new master gets ~1/31 of the slots: a quick rebalance
REFRESH_BOUND_S = 5.0 + 3.0 + 5.0  # Envoy's refresh rate + timeout, + slack for this machine


def _cli(lab, *args: str) -> str:
    run = lab.redis_cli(*args)
    output = run.stdout + run.stderr
    allure.attach(output[-20_000:], name="redis-cli " + " ".join(args[:2]),
                  attachment_type=allure.attachment_type.TEXT)
    assert run.returncode == 0, output[-2000:]
    return output


def _agree(lab, seed: str) -> bool:
    """`redis-cli --cluster check`: every node agrees on the configuration, no open slot."""
    return lab.redis_cli("--cluster", "check", seed, timeout=60).returncode == 0


def _all_know(lab, nodes, node_id: str) -> bool:
    """Every one of `nodes` lists `node_id` in its CLUSTER NODES."""
    return bool(node_id) and all(
        node_id in (text(lab.client(n).execute_command("CLUSTER", "NODES")) or "")
        for n in nodes)


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {seconds:g} s")


@pytest.mark.feature("ScaleOut")
def test_a_shard_added_with_add_node_and_rebalance_is_served(lab_variant):
    """add-node + rebalance a fourth master, add-node a second replica to a shard: the proxy
    serves the new master's slots from it and shares the grown shard's reads by its replicas"""
    lab = lab_variant(SCALE_OUT)
    if len(lab.spares) < 2:
        pytest.skip("this backend starts no spare pods (UpOptions.spare_pods)")
    topology = lab.state.topology
    new_master, new_replica = lab.spares[:2]
    grown_master = topology.shards[0].master
    seed = lab.cli_address(topology.nodes[0])
    everyone = [*topology.nodes, new_master, new_replica]
    with allure.step(f"redis-cli --cluster add-node {new_master.name} (an empty master)"):
        _cli(lab, "--cluster", "add-node", lab.cli_address(new_master), seed)
        new_id = text(lab.client(new_master).execute_command("CLUSTER", "MYID")) or ""
        _wait(lambda: all("cluster_state:ok" in (text(lab.client(n).execute_command(
            "CLUSTER", "INFO")) or "") for n in everyone[:-1]), 30, "cluster_state:ok")
        # every node must know the new one before slots move to it (rebalance fails otherwise
        # with "I don't know about node"); --cluster check compares slots only, and the new
        # master has none yet, so its id is looked for in every node's CLUSTER NODES
        _wait(lambda: _all_know(lab, everyone[:-1], new_id), 30,
              f"every node knowing {new_master.name} (CLUSTER NODES)")
        _wait(lambda: _agree(lab, seed), 30, "every node agreeing on the cluster (--cluster check)")
    with allure.step("redis-cli --cluster rebalance --cluster-use-empty-masters"):
        _cli(lab, "--cluster", "rebalance", seed, "--cluster-use-empty-masters",
             "--cluster-weight", f"{new_id}={NEW_WEIGHT}")
    added = next(sh for sh in lab.cluster_slots_topology().shards
                 if sh.master.name == new_master.name)
    run = token()
    keys = _keys_of(added, f"scale-{run}", 12)
    client = lab.proxy_client()
    # At once, only writes: a read may still go to a replica of the slot's old owner, which
    # serves it (READONLY) until gossip tells it the slot moved, and has no such key yet. Reads
    # are checked once Envoy has refreshed (below), through the proxy, value by value.
    with allure.step(f"set {len(keys)} keys of the new master's slots through the proxy at "
                     "once: Envoy follows MOVED until its next refresh, the client sees "
                     "nothing"):
        with lab.monitor([new_master]) as capture:
            for key in keys:
                assert ok(client.execute_command("SET", key, f"{key}!"))
        for key in keys:
            assert capture.on(new_master.name, command="SET", key=key), \
                f"SET {key} not executed by the new master {new_master.name}"
            assert lab.client(new_master).get(key) == f"{key}!".encode()
    _wait(lambda: _agree(lab, seed), 30, "every node agreeing on the slots (--cluster check)")
    _no_replica_migration(lab, everyone)
    grown_id = text(lab.client(grown_master).execute_command("CLUSTER", "MYID")) or ""
    with allure.step(f"redis-cli --cluster add-node {new_replica.name} --cluster-slave "
                     f"--cluster-master-id <{grown_master.name}>"):
        _cli(lab, "--cluster", "add-node", lab.cli_address(new_replica), seed, "--cluster-slave",
             "--cluster-master-id", grown_id)
        _wait(lambda: _shape_settled(lab, new_master, grown_master), 30,
              "CLUSTER SLOTS: 4 masters, and 2 replicas for " + grown_master.name)
        assert lab.wait_replicated(grown_master) == 2, "the new replica is not in sync"
    now = lab.cluster_slots_topology()
    grown = next(s for s in now.shards if s.master.name == grown_master.name)
    with allure.step("Envoy's /clusters: the 8 nodes, healthy"):
        _wait(lambda: _hosts(lab) == ({n.address for n in everyone}, {"healthy"}),
              REFRESH_BOUND_S, "Envoy's /clusters showing the new hosts, healthy")
    with allure.step("after Envoy's refresh, reads of its keys are served by it directly"):
        _wait(lambda: _reads_direct(lab, client, new_master, keys), REFRESH_BOUND_S,
              "reads served by the new master without a redirection")
    _assert_reads_shared(lab, client, grown, _keys_of(grown, f"scale-{run}-grown", 2))


def _assert_reads_shared(lab, client, grown, shared: list[str]) -> None:
    """The grown shard's reads reach both of its replicas (PREFER_REPLICA, Envoy's pick)."""
    for key in shared:
        assert ok(client.execute_command("SET", key, key))
    assert lab.wait_replicated(grown.master) == 2
    replicas = [r.name for r in grown.replicas]
    with allure.step(f"{READS} reads of {grown.master.name}'s keys: shared by {replicas}"):
        counts: dict[str, int] = {}

        def shared_by_both() -> bool:
            counts.clear()
            counts.update(_replica_reads(lab, client, grown, shared))
            return all(counts[r] >= MIN_SHARE * READS for r in replicas)

        try:
            _wait(shared_by_both, REFRESH_BOUND_S, f"reads shared by {replicas}")
        finally:
            allure.attach(repr(counts), name="reads per node of the grown shard",
                          attachment_type=allure.attachment_type.TEXT)


# The grown shard's reads: each replica gets at least MIN_SHARE of READS reads, except with a
# probability under 1e-6 when Envoy picks one of two replicas at random (checked below).
READS = 100
MIN_SHARE = 0.22
assert binomial_tail(READS, int(MIN_SHARE * READS)) < 1e-6


def _no_replica_migration(lab, nodes) -> None:
    """cluster-allow-replica-migration no, as an operator growing one shard sets it: otherwise
    Redis 7 hands the new second replica straight to the new master, which has none (replica
    migration to an orphaned master; Redis 6.2 does not count a master that never had a
    replica as orphaned)."""
    with allure.step("config set cluster-allow-replica-migration no (every node)"):
        for node in nodes:
            lab.client(node).execute_command("CONFIG", "SET",
                                             "cluster-allow-replica-migration", "no")


def _shape_settled(lab, new_master, grown_master) -> bool:
    now = lab.cluster_slots_topology()
    masters = {s.master.name: s for s in now.shards}
    return (len(now.shards) == 4 and new_master.name in masters
            and len(masters[grown_master.name].replicas) == 2)


def _hosts(lab) -> tuple[set[str], set[str]]:
    hosts = lab.proxy_hosts()
    return set(hosts), set(hosts.values())


def _keys_of(shard, prefix: str, count: int) -> list[str]:
    keys: list[str] = []
    index = 0
    while len(keys) < count:
        key = f"{prefix}-{index}"
        index += 1
        if shard.owns(key_slot(key)):
            keys.append(key)
    return keys


def _replica_reads(lab, client, shard, keys: list[str]) -> dict[str, int]:
    nodes = [shard.master, *shard.replicas]
    with lab.monitor(nodes) as capture:
        for index in range(READS):
            key = keys[index % len(keys)]
            assert text(client.execute_command("GET", key)) == key
    return {n.name: sum(len(capture.on(n.name, command="GET", key=k)) for k in keys)
            for n in nodes}


def _reads_direct(lab, client, node, keys: list[str]) -> bool:
    """Every GET of `keys` through the proxy returns its value and is executed by `node`."""
    with lab.monitor([node]) as capture:
        for key in keys:
            assert text(client.execute_command("GET", key)) == f"{key}!"
    return all(capture.on(node.name, command="GET", key=key) for key in keys)
