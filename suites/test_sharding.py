"""Sharding: every key lands on the master that owns its slot and on that master's replica."""

from __future__ import annotations

import allure
import pytest

from lab.slots import key_slot

from .keys import TUTORIAL_KEYS, ok, text, token


def _keys_on(lab, node, match: str) -> set[str]:
    return {text(k) or "" for k in lab.client(node).scan_iter(match=match, count=1000)}


@pytest.mark.feature("Sharding")
def test_tutorial_keys_land_as_the_tutorial_shows(lab):
    """set a..h through the proxy: b,f on 0-5460; c,g on 5461-10922; a,d,e,h on 10923-16383"""
    for key in TUTORIAL_KEYS:
        with allure.step(f"set {key} {key}"):
            assert ok(lab.proxy.execute_command("SET", key, key))
    for shard in lab.topology.shards:
        lab.wait_replicated(shard.master)
    for shard in lab.topology.shards:
        expected = {k for k, (first, last) in TUTORIAL_KEYS.items()
                    if (first, last) in shard.slots}
        assert expected, f"no shard with the tutorial's ranges: {shard.slots}"
        for node in shard.nodes:
            with allure.step(f"SCAN MATCH ? on {node.name} at {lab.address(node)}"):
                found = _keys_on(lab, node, "?") & set(TUTORIAL_KEYS)
            assert found == expected, f"{node.name} holds {sorted(found)}"


@pytest.mark.feature("Sharding")
def test_random_keys_land_on_their_slot_owner_only(lab):
    """A few hundred random keys: each on CRC16(key) mod 16384's master and replica, nowhere else"""
    prefix = f"sharding-{token()}"
    keys = [f"{prefix}-{i}" for i in range(300)]
    with allure.step(f"set {len(keys)} keys through the proxy (no MOVED/ASK to the client)"):
        for key in keys:
            assert ok(lab.proxy.execute_command("SET", key, "v")), key
    for shard in lab.topology.shards:
        lab.wait_replicated(shard.master)
    placed: dict[str, set[str]] = {}
    for node in lab.nodes:
        with allure.step(f"SCAN MATCH {prefix}-* on {node.name} at {lab.address(node)}"):
            placed[node.name] = _keys_on(lab, node, f"{prefix}-*")
    for shard in lab.topology.shards:
        owned = {k for k in keys if shard.owns(key_slot(k))}
        assert owned, f"no random key fell on shard {shard.slots}"
        for node in shard.nodes:
            assert placed[node.name] == owned, f"{node.name} does not hold exactly its slots' keys"
    assert sum(len(v) for v in placed.values()) == 2 * len(keys)
    with allure.step("read every key back through the proxy"):
        for key in keys:
            assert text(lab.proxy.execute_command("GET", key)) == "v"
