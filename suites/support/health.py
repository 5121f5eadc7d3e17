"""Proving a lab healthy after a test changed it, and putting the roles back (CLUSTER FAILOVER).

"As at up" means: cluster_state:ok on every node, the slot map and the master/replica roles of
`lab.state.topology`, every replica's link up and in sync (offsets), and Envoy's /clusters showing
exactly the original hosts, all healthy, and routing reads of every part of the slot map without
following a single MOVED/ASK (its slot map is the cluster's again).
"""

from __future__ import annotations

import re
import time

import allure
from tenacity import retry, stop_after_delay, wait_fixed

from lab import waits
from lab.model import PROXY_CLUSTER
from lab.slots import key_slot
from lab.topology import from_cluster_slots

from .keys import text


def _shape(topology) -> set:
    return {(s.slots, s.master.name, tuple(r.name for r in s.replicas)) for s in topology.shards}


def failure_flags(lab) -> list[str]:
    """`fail` / `fail?` flags any node still holds about another (CLUSTER NODES)."""
    found = []
    for node in lab.state.topology.nodes:
        raw = text(lab.client(node).execute_command("CLUSTER", "NODES")) or ""
        for line in raw.splitlines():
            parts = line.split()
            if len(parts) > 2 and {"fail", "fail?"} & set(parts[2].split(",")):
                found.append(f"{node.name} sees {parts[1]} {parts[2]}")
    return found


_REDIRECTS = re.compile(rf"^cluster\.{re.escape(PROXY_CLUSTER)}\."
                        r"upstream_internal_redirect_succeeded_total: (\d+)$", re.M)


def _probe_keys(every: int = 64) -> list[str]:
    """A key in every `every`-th slot: a read of each touches the proxy's whole slot map."""
    found: dict[int, str] = {}
    index = 0
    while len(found) < 16384 // every:
        key = f"rml-probe-{index}"
        index += 1
        block = key_slot(key) // every
        found.setdefault(block, key)
    return list(found.values())


PROBES = _probe_keys()


def redirects_followed_by_envoy(lab) -> int:
    """MOVED/ASK replies Envoy has followed itself so far (its internal redirect counter)."""
    found = _REDIRECTS.search(lab.admin(f"/stats?filter={PROXY_CLUSTER}"))
    return int(found.group(1)) if found else 0


def proxy_routes_by_itself(lab) -> bool:
    """Reads of a key in every 64th slot cause no MOVED/ASK for Envoy to follow: its slot map
    matches the cluster's (after a topology change it may lag until its next refresh)."""
    client = lab.proxy_client()
    before = redirects_followed_by_envoy(lab)
    for key in PROBES:
        client.execute_command("GET", key)
    return redirects_followed_by_envoy(lab) == before


def _owned_key(shard) -> str:
    """A key in one of the shard's slots, for a write straight to its master."""
    index = 0
    while not shard.owns(key_slot(f"rml-heal-{index}")):
        index += 1
    return f"rml-heal-{index}"


PROBE_WRITES = 3


def _replication_flows(lab, shard) -> None:
    """New writes on the master reach every replica within a second each. In sync now is not
    enough: a replica can hold its master's stream unapplied (Redis 6.2's demoted master after
    a plain CLUSTER FAILOVER keeps the failover's client pause for ~10 s; the first write after
    it still goes through, hence several)."""
    key = _owned_key(shard)
    master = lab.client(shard.master)
    try:
        for index in range(PROBE_WRITES):
            master.set(key, str(index))
            acked = lab.wait_replicated(shard.master, 1000)
            assert acked == len(shard.replicas), (
                f"{shard.master.name}: write {index + 1} reached {acked} of "
                f"{len(shard.replicas)} replicas within 1 s")
    finally:
        master.delete(key)


def assert_lab_as_at_up(lab, timeout: float = 30) -> None:
    @retry(stop=stop_after_delay(timeout), wait=wait_fixed(0.2), reraise=True)
    def healthy() -> None:
        for node in lab.state.topology.nodes:
            info = text(lab.client(node).execute_command("CLUSTER", "INFO")) or ""
            assert "cluster_state:ok" in info, f"{node.name}: {info.splitlines()[:1]}"
        flags = failure_flags(lab)  # a FAIL flag left behind still starts a failover later
        assert not flags, flags
        assert _shape(lab.cluster_slots_topology()) == _shape(lab.state.topology)
        names = {n.address: n.name for n in lab.state.topology.nodes}
        for node in lab.state.topology.nodes:  # every node agrees: Envoy may ask any of them
            reply = lab.client(node).execute_command("CLUSTER", "SLOTS", NEVER_DECODE=True)
            seen = from_cluster_slots(reply, lambda h, p: names.get(f"{h}:{p}", f"{h}:{p}"))
            assert _shape(seen) == _shape(lab.state.topology), f"{node.name}: stale slot map"
        for shard in lab.state.topology.shards:  # replication is back: links up, in sync
            for replica in shard.replicas:
                info = lab.client(replica).info("replication")
                assert info.get("master_link_status") == "up", f"{replica.name}: link not up"
            acked = lab.wait_replicated(shard.master, 1000)
            assert acked == len(shard.replicas), f"{shard.master.name}: {acked} in sync"
            _replication_flows(lab, shard)
        hosts = lab.proxy_hosts()
        assert set(hosts) == {n.address for n in lab.state.topology.nodes}
        assert set(hosts.values()) == {"healthy"}, hosts
        assert proxy_routes_by_itself(lab), "Envoy still follows redirections: stale slot map"

    with allure.step("the lab is as at up: cluster_state:ok, slots and roles, Envoy healthy"), \
            waits.waiting(waits.NODE_TIMEOUT):
        healthy()


def _role(client) -> str:
    try:
        return text(client.execute_command("ROLE")[0]) or ""
    except Exception:  # a node coming back answers LOADING / refuses for a moment
        return ""


def _take_back(lab, shard, timeout: float) -> None:
    """The shard's original master is a replica now: once it says so itself (a restarted node
    reports its old role until gossip corrects it), its link is up and it has processed every
    write of its master, CLUSTER FAILOVER FORCE on it until it is master and the other node its
    replica.

    FORCE, because a plain CLUSTER FAILOVER makes the old master pause its clients' writes for
    2 x the manual-failover timeout (10 s), and Redis 6.2 keeps that pause after the node has
    become a replica: it then applies nothing its new master sends until the pause ends (reads
    of that replica are stale for ~10 s). FORCE skips that handshake; the wait for the offsets
    above is what the handshake would have ensured (the traffic has stopped by then)."""
    node, other = shard.master, shard.replicas[0]
    client = lab.client(node)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _role(client) == "master" and _role(lab.client(other)) == "slave":
            return
        if (_role(client) == "slave"
                and client.info("replication").get("master_link_status") == "up"
                and lab.wait_replicated(other, 1000) >= 1):
            client.execute_command("CLUSTER", "FAILOVER", "FORCE")
            settle = time.monotonic() + 10  # a manual failover takes well under node timeout
            while time.monotonic() < min(settle, deadline) and _role(client) != "master":
                time.sleep(0.05)
        time.sleep(0.1)
    raise AssertionError(f"{node.name} did not become master again within {timeout:g} s")


def restore_roles(lab, timeout: float = 30) -> list[str]:
    """Every shard whose original replica is master now gets its roles back (CLUSTER FAILOVER
    on the original master, as an operator would); returns the original masters that had to."""
    moved = []
    for shard in lab.state.topology.shards:
        if _role(lab.client(shard.replicas[0])) != "master":
            continue
        moved.append(shard.master.name)
        with allure.step(f"cluster failover on {shard.master.name}: its master role back"):
            _take_back(lab, shard, timeout)
    return moved


def heal(lab, timeout: float = 60) -> None:
    """Put roles back and prove the lab as at up; repeated until `timeout`, because a replica
    may still be promoted a moment after a fault was undone (a FAIL flag outlives the fault)."""
    with waits.waiting(waits.NODE_TIMEOUT):
        _heal(lab, timeout)


def _heal(lab, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        restore_roles(lab, timeout=max(1.0, deadline - time.monotonic()))
        try:
            assert_lab_as_at_up(lab, timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            return
        except AssertionError:
            if time.monotonic() >= deadline:
                raise


class NoFailover:
    """`with NoFailover(lab, shard):` its replicas do not take over while the master is down
    (cluster-replica-no-failover), so a fault on a whole shard changes no role."""

    def __init__(self, lab, shard) -> None:
        self.lab = lab
        self.clients = [lab.client(r) for r in shard.replicas]

    def __enter__(self) -> NoFailover:
        for client in self.clients:
            client.execute_command("CONFIG", "SET", "cluster-replica-no-failover", "yes")
        return self

    def __exit__(self, *exc: object) -> None:
        # a master's FAIL flag outlives its fault (cleared 2 x node timeout later): allowing
        # failovers before it is gone would let the replica take over after all
        deadline = time.monotonic() + 30
        with waits.waiting(waits.NODE_TIMEOUT):
            while failure_flags(self.lab) and time.monotonic() < deadline:
                time.sleep(0.1)
        for client in self.clients:
            client.execute_command("CONFIG", "SET", "cluster-replica-no-failover", "no")
