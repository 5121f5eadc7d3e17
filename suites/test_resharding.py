"""Resharding: a slot moved live between masters (CLUSTER SETSLOT + MIGRATE, what
`redis-cli --cluster reshard` does) under an unchanged client: the proxy follows ASK and
MOVED (`enable_redirection`) and the client never sees either."""

from __future__ import annotations

import random

import allure
import pytest
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from .support.keys import errors, moved_and_ask_by_node, run_keys, through_proxy


class _NotYet(Exception):
    pass


def _until(seconds: float):
    return retry(stop=stop_after_delay(seconds), wait=wait_fixed(0.1), reraise=True,
                 retry=retry_if_exception_type(_NotYet))


def _owners(lab, slot: int) -> dict[str, str]:
    """Each node's idea of who serves `slot` ("host:port" of the master)."""
    seen = {}
    for node in lab.nodes:
        for first, last, master, *_ in lab.client(node).execute_command("CLUSTER", "SLOTS"):
            if int(first) <= slot <= int(last):
                host = master[0].decode() if isinstance(master[0], bytes) else master[0]
                seen[node.name] = f"{host}:{int(master[1])}"
    return seen


def _wait_agreed(lab, slot: int, owner) -> None:
    @_until(30)
    def agreed() -> None:
        owners = _owners(lab, slot)
        if set(owners.values()) != {owner.address} or len(owners) != len(lab.nodes):
            raise _NotYet(f"slot {slot}: nodes see {owners}, not {owner.name} everywhere")

    agreed()


def _migrate(lab, keys: list[bytes], source, target) -> None:
    if keys:
        reply = lab.client(source).execute_command("MIGRATE", target.host, target.port, "", 0,
                                                   5000, "REPLACE", "KEYS", *keys)
        assert reply in (b"OK", b"NOKEY", True), reply


def _drain(lab, slot: int, source, target) -> None:
    """MIGRATE every key of `slot` that `source` holds to `target`."""
    while True:
        left = lab.client(source).execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        if not left:
            return
        _migrate(lab, list(left), source, target)


def _start_move(lab, slot: int, source, target) -> None:
    src_id = lab.client(source).execute_command("CLUSTER", "MYID")
    dst_id = lab.client(target).execute_command("CLUSTER", "MYID")
    lab.client(target).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    lab.client(source).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)


def _finish_move(lab, slot: int, source, target) -> None:
    """Move what is left of the slot, give it to the target everywhere, wait for agreement."""
    _drain(lab, slot, source, target)
    dst_id = lab.client(target).execute_command("CLUSTER", "MYID")
    for node in (target, source, *[s.master for s in lab.topology.shards
                                   if s.master not in (source, target)]):
        lab.client(node).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    _wait_agreed(lab, slot, target)


def _wait_proxy_routes_straight(lab, key: bytes) -> None:
    """Until a read of `key` through the proxy makes no node answer MOVED/ASK (the proxy
    has the new topology), so the next test starts from a settled cluster. A read, because
    reads are never mirrored (a mirror may itself cause redirections). A proxy that does
    not follow redirections hands the client MOVED until its next topology refresh: waited
    for too, so a broken proxy fails this test and leaves no stale slot map to the next."""

    @_until(30)
    def straight() -> None:
        before = moved_and_ask_by_node(lab)
        seen = errors(through_proxy(lab, [("GET", key)]))
        if seen:
            raise _NotYet(f"the client still sees {seen[:1]}")
        if moved_and_ask_by_node(lab) != before:
            raise _NotYet("the proxy still follows a redirection for the slot")

    straight()


@pytest.mark.feature("Resharding")
def test_a_slot_moved_live_stays_transparent_to_the_client(lab):
    """CLUSTER SETSLOT MIGRATING/IMPORTING, MIGRATE half the keys, write them all through the
    proxy (ASK), finish the move (MOVED), read and write them through the proxy; move it back"""
    topology = lab.topology
    source_shard, target_shard = random.sample(list(topology.shards), 2)
    source, target = source_shard.master, target_shard.master
    first, last = random.choice(source_shard.slots)
    slot = random.randint(first, last)
    with run_keys(lab) as keys:
        slot_keys = keys.in_slot(slot, 20)
        values = {k: keys.value("before") for k in slot_keys}
        assert not errors(through_proxy(lab, [("SET", k, v) for k, v in values.items()]))
        held = lab.client(source).execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
        assert held == len(slot_keys), f"{source.name} holds {held} of the slot's keys " \
            f"written through the proxy, not {len(slot_keys)}"
        moved = False
        try:
            with allure.step(f"slot {slot}: {source.name} MIGRATING -> {target.name} "
                             "IMPORTING; MIGRATE half its keys"):
                _start_move(lab, slot, source, target)
                moved = True
                _migrate(lab, slot_keys[: len(slot_keys) // 2], source, target)
            with allure.step("mid-migration: write every key through the proxy (ASK)"):
                during = {k: keys.value("during") for k in slot_keys}
                replies = through_proxy(lab, [("SET", k, v) for k, v in during.items()])
                assert not errors(replies), f"the client saw: {errors(replies)[:2]}"
            with allure.step(f"finish: the slot is {target.name}'s on every node"):
                _finish_move(lab, slot, source, target)
            with allure.step("read and write every key through the proxy (MOVED)"):
                assert lab.wait_replicated(target) >= 1, "WAIT 1 timed out"
                got = through_proxy(lab, [("GET", k) for k in slot_keys])
                assert not errors(got), f"the client saw: {errors(got)[:2]}"
                assert got == [during[k] for k in slot_keys]
                after = {k: keys.value("after") for k in slot_keys}
                replies = through_proxy(lab, [("SET", k, v) for k, v in after.items()])
                assert not errors(replies), f"the client saw: {errors(replies)[:2]}"
                assert lab.wait_replicated(target) >= 1, "WAIT 1 timed out"
                got = through_proxy(lab, [("GET", k) for k in slot_keys])
                assert got == [after[k] for k in slot_keys]
                direct = lab.client(target).mget(slot_keys)
                assert direct == [after[k] for k in slot_keys], \
                    f"{target.name} does not hold the values written through the proxy"
        finally:
            if moved:
                with allure.step(f"move slot {slot} back to {source.name}"):
                    if _owners(lab, slot).get(target.name) != target.address:
                        _finish_move(lab, slot, source, target)  # interrupted: finish first
                    _start_move(lab, slot, target, source)
                    _finish_move(lab, slot, target, source)
                    _wait_proxy_routes_straight(lab, slot_keys[0])
