"""ReadPolicyReplica: reads reach only replicas, writes only masters (MONITOR on all six)."""

from __future__ import annotations

import allure
import pytest

from .keys import ok, per_shard, text

READS_PER_KEY = 3


@pytest.mark.feature("ReadPolicyReplica")
def test_reads_reach_only_the_replica(lab):
    """get through the proxy: seen by MONITOR on the key's replica, never on its master"""
    keys = per_shard(lab.topology, "read", 2)
    for key in keys:
        assert ok(lab.proxy.execute_command("SET", key, key))
    for shard in lab.topology.shards:
        lab.wait_replicated(shard.master)
    with lab.monitor() as capture:
        for key in keys:
            for _ in range(READS_PER_KEY):
                with allure.step(f"get {key}"):
                    assert text(lab.proxy.execute_command("GET", key)) == key
    for key, shard in keys.items():
        on_replicas = sum(len(capture.on(r, command="GET", key=key)) for r in shard.replicas)
        on_master = capture.on(shard.master, command="GET", key=key)
        elsewhere = [e for e in capture.entries if e.command == "GET" and e.args[1:2] == (key,)
                     and e.node not in {n.name for n in shard.nodes}]
        assert not on_master, f"GET {key} reached master {shard.master.name}"
        assert on_replicas == READS_PER_KEY, f"GET {key}: {on_replicas} on the replica"
        assert not elsewhere, f"GET {key} reached another shard"


@pytest.mark.feature("ReadPolicyReplica")
def test_writes_reach_only_the_master(lab):
    """set through the proxy: executed by the key's master; the replica gets it by replication"""
    keys = per_shard(lab.topology, "write", 2)
    with lab.monitor(lab.nodes) as capture:
        for key in keys:
            with allure.step(f"set {key} {key}"):
                assert ok(lab.proxy.execute_command("SET", key, key))
    for key, shard in keys.items():
        assert len(capture.on(shard.master, command="SET", key=key)) == 1
        for replica in shard.replicas:
            assert not capture.on(replica, command="SET", key=key), \
                f"SET {key} was sent to replica {replica.name}"
        others = [e for e in capture.entries if e.command == "SET" and e.args[1:2] == (key,)
                  and not e.replicated and e.node != shard.master.name]
        assert not others


@pytest.mark.feature("ReadPolicyReplica")
def test_read_after_write_returns_the_new_value(lab):
    """get b; set b bb; get b -> "bb" once the write has replicated"""
    shard = lab.topology.shard_for_key("b")
    with allure.step("set b b"):
        assert ok(lab.proxy.execute_command("SET", "b", "b"))
    lab.wait_replicated(shard.master)
    with allure.step("get b"):
        assert text(lab.proxy.execute_command("GET", "b")) == "b"
    with allure.step("set b bb"):
        assert ok(lab.proxy.execute_command("SET", "b", "bb"))
    with allure.step("WAIT 1 on the master: the replica has it"):
        assert lab.wait_replicated(shard.master) >= 1
    with allure.step("get b"):
        assert text(lab.proxy.execute_command("GET", "b")) == "bb"
