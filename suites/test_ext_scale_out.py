"""ScaleOut: a shard added with `redis-cli --cluster add-node` + `rebalance`, under an unchanged
client, on a variant lab of its own (the session lab is never reshaped).

The lab has six redis-server processes and no way to start a seventh through the `Lab` handle,
so the new master is a node that leaves the cluster first: shard 0's replica is forgotten by
every node and reset (CLUSTER FORGET / CLUSTER RESET HARD, what `del-node` does short of shutting
it down), then joins again as an empty master (`add-node`), and `rebalance
--cluster-use-empty-masters` gives it slots. The claim: the proxy picks up a fourth shard with
no client change; keys of the slots that moved are written and read through the proxy and are
served by the new master; no client error or MOVED.
"""

from __future__ import annotations

import subprocess
import time

import allure
import pytest

from lab import binaries
from lab.conformance.variants import Variant
from lab.slots import key_slot

from .keys import ok, text, token

# PREFER_REPLICA: the new shard (and the shard that gave up its replica) have no replica, so
# REPLICA would refuse their reads; the claim here is about routing, not the read policy
SCALE_OUT = Variant("scale-out", read_policy="PREFER_REPLICA")
NEW_WEIGHT = "0.1"  # the new master gets ~1/31 of the slots: a quick rebalance
REFRESH_BOUND_S = 5.0 + 3.0 + 5.0  # Envoy's refresh rate + timeout, + slack for this machine


def _address(lab, node) -> str:
    kwargs = lab.client(node).connection_pool.connection_kwargs
    return f"{kwargs['host']}:{kwargs['port']}"


def _cli(*args: str) -> str:
    run = subprocess.run([binaries.redis_cli(), *args], capture_output=True, text=True,
                         timeout=300, check=False)
    output = run.stdout + run.stderr
    allure.attach(output[-20_000:], name="redis-cli " + " ".join(args[:2]),
                  attachment_type=allure.attachment_type.TEXT)
    assert run.returncode == 0, output[-2000:]
    return output


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {seconds:g} s")


@pytest.mark.feature("ScaleOut")
def test_a_shard_added_with_add_node_and_rebalance_is_served(lab_variant):
    """add-node + rebalance a fourth master; keys of its slots served by it through the proxy"""
    lab = lab_variant(SCALE_OUT)
    topology = lab.state.topology
    leaving = topology.shards[0].replicas[0]
    others = [n for n in topology.nodes if n != leaving]
    leaving_id = text(lab.client(leaving).execute_command("CLUSTER", "MYID")) or ""
    with allure.step(f"{leaving.name} leaves the cluster (FORGET everywhere, RESET HARD)"):
        for node in others:
            lab.client(node).execute_command("CLUSTER", "FORGET", leaving_id)
        lab.client(leaving).execute_command("CLUSTER", "RESET", "HARD")
    with allure.step(f"redis-cli --cluster add-node {leaving.name} (an empty master)"):
        _cli("--cluster", "add-node", _address(lab, leaving), _address(lab, others[0]))
        new_id = text(lab.client(leaving).execute_command("CLUSTER", "MYID")) or ""
        _wait(lambda: all("cluster_state:ok" in (text(lab.client(n).execute_command(
            "CLUSTER", "INFO")) or "") for n in topology.nodes), 30, "cluster_state:ok")
    with allure.step("redis-cli --cluster rebalance --cluster-use-empty-masters"):
        _cli("--cluster", "rebalance", _address(lab, others[0]), "--cluster-use-empty-masters",
             "--cluster-weight", f"{new_id}={NEW_WEIGHT}")
    now = lab.cluster_slots_topology()
    assert len(now.shards) == 4, [s.master.name for s in now.shards]
    grown = next(s for s in now.shards if s.master.name == leaving.name)
    with allure.step("Envoy's /clusters: every node, healthy; its topology has 4 masters"):
        hosts = lab.proxy_hosts()
        assert set(hosts) == {n.address for n in topology.nodes}
        assert set(hosts.values()) == {"healthy"}
    run = token()
    keys = []
    index = 0
    while len(keys) < 12:
        key = f"scale-{run}-{index}"
        index += 1
        if grown.owns(key_slot(key)):
            keys.append(key)
    client = lab.proxy_client()
    with allure.step(f"set/get {len(keys)} keys of its slots through the proxy, at once: "
                     "Envoy follows MOVED until its next refresh, the client sees nothing"):
        with lab.monitor([leaving]) as capture:
            for key in keys:
                assert ok(client.execute_command("SET", key, f"{key}!"))
                assert text(client.execute_command("GET", key)) == f"{key}!"
        for key in keys:
            assert capture.on(leaving.name, command="SET", key=key), \
                f"SET {key} not executed by the new master {leaving.name}"
            assert lab.client(leaving).get(key) == f"{key}!".encode()
    with allure.step("after Envoy's refresh, reads of its keys are served by it directly"):
        _wait(lambda: _reads_direct(lab, client, leaving, keys), REFRESH_BOUND_S,
              "reads served by the new master without a redirection")


def _reads_direct(lab, client, leaving, keys: list[str]) -> bool:
    with lab.monitor([leaving]) as capture:
        for key in keys:
            assert text(client.execute_command("GET", key)) == f"{key}!"
    return all(capture.on(leaving.name, command="GET", key=key) for key in keys)
