"""Proving a lab healthy after a test changed it, and putting the roles back (CLUSTER FAILOVER).

"As at up" means: cluster_state:ok on every node, the slot map and the master/replica roles of
`lab.state.topology`, every replica's link up and in sync (WAIT), and Envoy's /clusters showing
exactly the original hosts, all healthy.
"""

from __future__ import annotations

import time

import allure
from tenacity import retry, stop_after_delay, wait_fixed

from .keys import text


def _shape(topology) -> set:
    return {(s.slots, s.master.name, tuple(r.name for r in s.replicas)) for s in topology.shards}


def assert_lab_as_at_up(lab, timeout: float = 30) -> None:
    @retry(stop=stop_after_delay(timeout), wait=wait_fixed(0.2), reraise=True)
    def healthy() -> None:
        for node in lab.state.topology.nodes:
            info = text(lab.client(node).execute_command("CLUSTER", "INFO")) or ""
            assert "cluster_state:ok" in info, f"{node.name}: {info.splitlines()[:1]}"
        assert _shape(lab.cluster_slots_topology()) == _shape(lab.state.topology)
        for shard in lab.state.topology.shards:  # replication is back: links up, in sync
            for replica in shard.replicas:
                info = text(lab.client(replica).execute_command("INFO", "replication")) or ""
                assert "master_link_status:up" in info, f"{replica.name}: link not up"
            acked = int(lab.client(shard.master).execute_command("WAIT", len(shard.replicas),
                                                                  1000))
            assert acked == len(shard.replicas), f"{shard.master.name}: WAIT {acked}"
        hosts = lab.proxy_hosts()
        assert set(hosts) == {n.address for n in lab.state.topology.nodes}
        assert set(hosts.values()) == {"healthy"}, hosts

    with allure.step("the lab is as at up: cluster_state:ok, slots and roles, Envoy healthy"):
        healthy()


def _role(client) -> str:
    try:
        return text(client.execute_command("ROLE")[0]) or ""
    except Exception:  # a node coming back answers LOADING / refuses for a moment
        return ""


def _take_back(lab, node, timeout: float) -> None:
    """CLUSTER FAILOVER on `node` (a replica now) until it is master again."""
    client = lab.client(node)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _role(client) == "slave":
            client.execute_command("CLUSTER", "FAILOVER")
            settle = time.monotonic() + 10  # a manual failover takes well under node timeout
            while time.monotonic() < min(settle, deadline) and _role(client) != "master":
                time.sleep(0.05)
        if _role(client) == "master":
            return
        time.sleep(0.1)
    raise AssertionError(f"{node.name} did not become master again within {timeout:g} s")


def restore_roles(lab, timeout: float = 30) -> list[str]:
    """Every original master that is a replica now takes its role back (CLUSTER FAILOVER on
    it, as an operator would); returns the nodes that had to."""
    moved = []
    for shard in lab.state.topology.shards:
        if _role(lab.client(shard.master)) == "master":
            continue
        moved.append(shard.master.name)
        with allure.step(f"cluster failover on {shard.master.name}: its master role back"):
            _take_back(lab, shard.master, timeout)
    return moved
