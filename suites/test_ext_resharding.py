"""Resharding under traffic: `redis-cli --cluster reshard` moves slots live while a client INCRs
counters through the proxy; the client sees no error, MOVED or ASK; every counter reads back
with its last acknowledged value, on master and replica; then the slots are moved back and the
lab is proven as it was.

The first shard's lowest MOVED_SLOTS slots go to the last shard (redis-cli takes a source's
slots from its lowest), so moving MOVED_SLOTS back from the last shard returns exactly them.
"""

from __future__ import annotations

import json

import allure
import pytest
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from lab import waits
from lab.slots import key_slot

from .support.health import assert_lab_as_at_up
from .support.keys import text, token
from .support.traffic import CounterTraffic

MOVED_SLOTS = 64
KEYS = 48  # all in the slots that move


def _node_id(lab, node) -> str:
    return text(lab.client(node).execute_command("CLUSTER", "MYID")) or ""


def reshard(lab, source, target, slots: int) -> str:
    """`redis-cli --cluster reshard` from one master to another (run against `source`)."""
    run = lab.redis_cli("--cluster", "reshard", lab.cli_address(source),
                        "--cluster-from", _node_id(lab, source), "--cluster-to",
                        _node_id(lab, target), "--cluster-slots", str(slots), "--cluster-yes")
    output = run.stdout + run.stderr
    allure.attach(output[-20_000:], name=f"redis-cli --cluster reshard {slots} slots",
                  attachment_type=allure.attachment_type.TEXT)
    assert run.returncode == 0, output[-2000:]
    return output


def _slot_owner(lab) -> dict[int, str]:
    owners: dict[int, str] = {}
    for shard in lab.cluster_slots_topology().shards:
        for first, last in shard.slots:
            for slot in range(first, last + 1):
                owners[slot] = shard.master.name
    return owners


class _NotYet(Exception):
    pass


@waits.counted(waits.MIGRATION)
def _wait_every_node_sees(lab, slots: range, owner) -> None:
    """Until every node's CLUSTER SLOTS gives `slots` to `owner`: a replica learns of a
    move by gossip, and until then answers a direct read of those slots with MOVED."""
    @retry(stop=stop_after_delay(30), wait=wait_fixed(0.1), reraise=True,
           retry=retry_if_exception_type(_NotYet))
    def agreed() -> None:
        for node in lab.nodes:
            seen = {}
            for first, last, master, *_ in lab.client(node).execute_command("CLUSTER", "SLOTS"):
                host = text(master[0])
                for slot in slots:
                    if int(first) <= slot <= int(last):
                        seen[slot] = f"{host}:{int(master[1])}"
            if set(seen) != set(slots) or set(seen.values()) != {owner.address}:
                raise _NotYet(f"{node.name} does not yet give slots {slots.start}-"
                              f"{slots.stop - 1} to {owner.name}: {sorted(set(seen.values()))}")

    agreed()


@pytest.mark.feature("Resharding")
@pytest.mark.profile("extended")  # `nox -s e2e`'s --lab-also=Resharding keeps it out
def test_reshard_under_traffic_is_invisible_to_the_client(lab):
    """redis-cli --cluster reshard 64 slots and back while INCR traffic runs through the proxy"""
    shards = lab.state.topology.shards
    source = min(shards, key=lambda s: s.slots[0][0])
    target = max(shards, key=lambda s: s.slots[0][0])
    first = source.slots[0][0]
    moving = range(first, first + MOVED_SLOTS)
    run = token()
    keys: list[str] = []
    index = 0
    while len(keys) < KEYS:
        candidate = f"reshard-{run}-{index}"
        index += 1
        if key_slot(candidate) in moving:
            keys.append(candidate)
    traffic = CounterTraffic(lab.proxy_client(), keys)
    traffic.start()
    try:
        assert traffic.wait_rounds(3), "the traffic did not start"
        with allure.step(f"reshard {MOVED_SLOTS} slots {source.master.name} -> "
                         f"{target.master.name} under traffic"):
            reshard(lab, source.master, target.master, MOVED_SLOTS)
        owners = _slot_owner(lab)
        assert {owners[s] for s in moving} == {target.master.name}, "the slots did not move"
        # redis-cli refuses to reshard while the nodes disagree ("Nodes don't agree about
        # configuration"): the other nodes learn of the move by gossip, later under load
        _wait_every_node_sees(lab, moving, target.master)
        with allure.step("traffic keeps going on the moved slots (Envoy follows the new owner)"):
            assert traffic.wait_rounds(3)
        with allure.step(f"reshard them back {target.master.name} -> {source.master.name}"):
            reshard(lab, target.master, source.master, MOVED_SLOTS)
        assert traffic.wait_rounds(3)
    finally:
        outcome = traffic.stop()
    try:
        reader = lab.proxy_client()
        consistency = traffic.check(lambda key: reader.execute_command("GET", key))
        summary = {"operations": outcome.ops, "errors": len(outcome.errors),
                   "redirectionsSeen": len(outcome.redirections), **consistency.as_dict()}
        allure.attach(json.dumps(summary, indent=2), name="resharding under traffic",
                      attachment_type=allure.attachment_type.JSON)
        assert not outcome.redirections, f"the client saw {outcome.redirections[:3]}"
        assert not outcome.errors, f"the client saw errors: {outcome.errors[:3]}"
        assert consistency.lost == 0 and consistency.unacknowledged == 0, summary
        with allure.step("master and replica hold the last value of every key"):
            for shard in lab.state.topology.shards:
                assert lab.wait_replicated(shard.master) >= 1
            _wait_every_node_sees(lab, moving, source.master)
            for key in keys:
                shard = lab.cluster_slots_topology().shard_for_key(key)
                expected = traffic.acked[key]
                for node in shard.nodes:
                    value = lab.client(node, readonly=True).execute_command("GET", key)
                    assert int(value or 0) == expected, f"{key} on {node.name}: {value!r}"
    finally:
        assert_lab_as_at_up(lab)  # includes: Envoy's slot map has caught up (no redirections)
        lab.proxy.execute_command("DEL", *keys)
