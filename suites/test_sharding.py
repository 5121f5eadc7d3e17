"""Sharding: every key lands on the master that owns its slot and on that master's replica."""

from __future__ import annotations

import allure
import pytest
from redis.crc import key_slot

from .support.keys import TUTORIAL_KEYS, errors, run_keys, show, through_proxy, wait_all_replicated


def _held(lab, node, wanted: set[bytes]) -> set[bytes]:
    """Which of `wanted` the node holds (SCAN on the node itself: no redirection)."""
    found = set()
    for key in lab.client(node).scan_iter(count=1000):
        if key in wanted:
            found.add(key)
    return found


def _values(lab, node, keys: list[bytes]) -> list[object]:
    client = lab.client(node, readonly=True)  # a replica serves reads of its slots
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return list(pipe.execute(raise_on_error=False))


@pytest.mark.feature("Sharding")
def test_tutorial_keys_land_as_the_tutorial_shows(lab):
    """set a..h through the proxy: b,f on 0-5460; c,g on 5461-10922; a,d,e,h on 10923-16383"""
    with run_keys(lab) as keys:
        names = keys.take(TUTORIAL_KEYS)
        values = {key: keys.value(key.decode()) for key in names}
        for key, value in values.items():
            with allure.step(f"set {key.decode()} <a value unique to this run>"):
                replies = through_proxy(lab, [("SET", key, value)])
                assert not errors(replies), replies
        wait_all_replicated(lab)
        topology = lab.topology
        for key in names:
            first, last = TUTORIAL_KEYS[key.decode()]
            assert first <= key_slot(key) <= last  # the tutorial's ranges are CRC16's
        for shard in topology.shards:
            expected = sorted(k for k in names if (*TUTORIAL_KEYS[k.decode()],) in shard.slots)
            assert expected, f"no shard with the tutorial's ranges: {shard.slots}"
            for node in shard.nodes:
                with allure.step(f"GET on {node.name} at {lab.address(node)}"):
                    got = _values(lab, node, expected)
                assert got == [values[k] for k in expected], \
                    f"{node.name} does not hold this run's values of {expected}"
            others = [n for n in topology.nodes if n not in shard.nodes]
            for node in others:
                assert not _held(lab, node, set(expected)), f"{node.name} holds {expected}"


@pytest.mark.feature("Sharding")
def test_random_keys_land_on_their_slot_owner_only(lab):
    """Random binary keys with every first byte: each on CRC16(key) mod 16384's master and
    replica, nowhere else; the client never sees MOVED/ASK"""
    topology = lab.topology
    with run_keys(lab) as keys:
        written = keys.spread(topology, per_shard=40)
        values = {key: keys.value() for key in written}
        with allure.step(f"set {len(written)} keys through the proxy (no MOVED/ASK)"):
            replies = through_proxy(lab, [("SET", k, v) for k, v in values.items()])
        assert not errors(replies), f"the client saw errors: {errors(replies)[:3]}"
        wait_all_replicated(lab)
        wanted = set(written)
        for shard in topology.shards:
            owned = sorted(k for k in written if shard.owns(key_slot(k)))
            assert owned, f"no key fell on shard {shard.slots}"
            for node in shard.nodes:
                with allure.step(f"SCAN on {node.name} at {lab.address(node)}"):
                    held = _held(lab, node, wanted)
                assert held == set(owned), \
                    f"{node.name}: {len(held - set(owned))} keys it does not own, " \
                    f"{len(set(owned) - held)} of its keys missing " \
                    f"(e.g. {[show(k) for k in list(held ^ set(owned))[:2]]})"
                assert _values(lab, node, owned) == [values[k] for k in owned], \
                    f"{node.name} does not hold this run's values"
