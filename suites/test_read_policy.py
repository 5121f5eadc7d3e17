"""ReadPolicyReplica: reads reach only replicas, writes only masters (MONITOR on all six);
with a shard's replica down its reads are not served by the master."""

from __future__ import annotations

import allure
import pytest
from redis.crc import key_slot
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from lab import waits

from .support.keys import (
    errors,
    run_keys,
    show,
    through_proxy,
    wait_all_replicated,
    wait_proxy_settled,
)

READS_PER_KEY = 2


def _executed(capture, command: str, values) -> dict[bytes, list[str]]:
    """Per key of ours: the nodes that executed `command` for a client (not replication)."""
    found: dict[bytes, list[str]] = {}
    for entry in capture.entries:
        if entry.command == command and not entry.replicated and entry.key in values:
            found.setdefault(entry.key, []).append(entry.node)
    return found


@pytest.mark.feature("ReadPolicyReplica")
def test_reads_reach_only_the_replica(lab):
    """get through the proxy: seen by MONITOR on the key's replica, never on its master"""
    topology = lab.topology
    with run_keys(lab) as keys:
        written = keys.spread(topology, per_shard=8)
        values = {key: keys.value() for key in written}
        replies = through_proxy(lab, [("SET", k, v) for k, v in values.items()])
        assert not errors(replies), errors(replies)[:3]
        wait_all_replicated(lab)
        wait_proxy_settled(lab, written)
        with lab.monitor(lab.nodes) as capture, \
                allure.step(f"get each of {len(written)} keys {READS_PER_KEY} times"):
            got = through_proxy(lab, [("GET", k) for k in written] * READS_PER_KEY)
        assert got == [values[k] for k in written] * READS_PER_KEY
        reads = _executed(capture, "GET", values)
        for key in written:
            shard = topology.shard_for_slot(key_slot(key))
            where = reads.get(key, [])
            assert shard.master.name not in where, \
                f"GET {show(key)} reached master {shard.master.name}"
            assert sorted(where) == sorted(r.name for r in shard.replicas for _ in
                                           range(READS_PER_KEY)), \
                f"GET {show(key)} (x{READS_PER_KEY}) executed by {where}, " \
                f"not by replica {[r.name for r in shard.replicas]}"


@pytest.mark.feature("ReadPolicyReplica")
def test_writes_reach_only_the_master(lab):
    """set through the proxy: executed by the key's master; the replica gets it by replication"""
    topology = lab.topology
    with run_keys(lab) as keys:
        values = {key: keys.value() for key in keys.spread(topology, per_shard=8)}
        with lab.monitor(lab.nodes) as capture:
            replies = through_proxy(lab, [("SET", k, v) for k, v in values.items()])
        assert not errors(replies), errors(replies)[:3]
        writes = _executed(capture, "SET", values)
        for key in values:
            shard = topology.shard_for_slot(key_slot(key))
            assert writes.get(key) and set(writes[key]) == {shard.master.name}, \
                f"SET {show(key)} executed by {writes.get(key)}, not by {shard.master.name}"


@pytest.mark.feature("ReadPolicyReplica")
def test_read_after_write_returns_the_new_value(lab):
    """get k; set k v2; WAIT 1; get k -> v2, for a key on every shard"""
    with run_keys(lab) as keys:
        for key, shard in keys.per_shard(lab.topology, 1).items():
            first, second = keys.value("first"), keys.value("second")
            with allure.step(f"set {show(key)} <first>; WAIT 1; get"):
                assert through_proxy(lab, [("SET", key, first)]) == [True]
                assert lab.wait_replicated(shard.master) >= 1, "WAIT 1 timed out"
                got = through_proxy(lab, [("GET", key)])
                assert got == [first], f"GET {show(key)}: {errors(got) or got}"
            with allure.step(f"set {show(key)} <second>; WAIT 1; get"):
                assert through_proxy(lab, [("SET", key, second)]) == [True]
                assert lab.wait_replicated(shard.master) >= 1, "WAIT 1 timed out"
                got = through_proxy(lab, [("GET", key)])
                assert got == [second], f"GET {show(key)}: {errors(got) or got}"


def _wait_proxy_sees(lab, node, present: bool, seconds: float = 60) -> None:
    """Until Envoy's view of the cluster (admin /clusters) has `node` (healthy) or not."""

    class _Not(Exception):
        pass

    @retry(stop=stop_after_delay(seconds), wait=wait_fixed(0.1), reraise=True,
           retry=retry_if_exception_type((_Not, OSError)))
    def check() -> None:
        hosts = lab.proxy_hosts()
        seen = hosts.get(node.address) == "healthy"
        if seen != present:
            raise _Not(f"{node.name} {'not yet' if present else 'still'} in the proxy's hosts")

    with waits.waiting(waits.REFRESH):
        check()


@pytest.mark.feature("ReadPolicyReplica")
def test_replica_down_reads_are_not_served_by_the_master(lab):
    """stop a shard's replica: its reads fail rather than reach the master (REPLICA, not
    PREFER_REPLICA); start it again: its reads are served by the replica again"""
    topology = lab.topology
    shard = topology.shards[0]
    replica = shard.replicas[0]
    others = [n for n in lab.nodes if n != replica]
    with run_keys(lab) as keys:
        values = {k: keys.value() for k, s in keys.per_shard(topology, 6).items() if s == shard}
        assert not errors(through_proxy(lab, [("SET", k, v) for k, v in values.items()]))
        wait_all_replicated(lab)
        try:
            with allure.step(f"stop {replica.name}; wait until the proxy's topology drops it"):
                lab.faults.stop(replica)
                _wait_proxy_sees(lab, replica, present=False)
            with lab.monitor(others) as capture, \
                    allure.step("get the shard's keys through the proxy"):
                down = through_proxy(lab, [("GET", k) for k in values])
        finally:  # whatever happened, the next test gets the whole cluster back
            with allure.step(f"start {replica.name}; wait until the proxy has it again"):
                if lab.faults.active:
                    lab.faults.start(replica)
                _wait_proxy_sees(lab, replica, present=True)
                assert lab.wait_replicated(shard.master) >= 1, "WAIT 1: no resync"
        served = [show(k) for k, r in zip(values, down, strict=True)
                  if not isinstance(r, Exception)]
        reads = _executed(capture, "GET", values)
        assert not reads, f"with {replica.name} down, reads were served by {reads}"
        assert not served, f"with {replica.name} down, the proxy answered {served[:3]}"
        with lab.monitor(lab.nodes) as capture:
            back = through_proxy(lab, [("GET", k) for k in values])
        assert back == list(values.values())
        reads = _executed(capture, "GET", values)
        assert all(reads.get(k) == [replica.name] for k in values), \
            f"after {replica.name} came back, reads were served by {reads}"
