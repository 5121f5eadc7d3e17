"""MultiKey: commands over keys of every shard are split by the proxy and answered as one.

MONITOR on the six nodes shows each key's part reaching its own shard (and no other); the
client gets one reply, with counts summed. Hash tags keep keys on one shard.
"""

from __future__ import annotations

import contextlib

import allure
import pytest

from .support.health import NoFailover, heal
from .support.keys import ok, per_shard, text, token

KEYS_PER_SHARD = 2


def _keys(lab) -> dict:
    return per_shard(lab.topology, "multi", KEYS_PER_SHARD)


def _touched(capture, key: str) -> set[str]:
    """Nodes where a client command (not replication) named `key` as an argument."""
    return {e.node for e in capture.entries if not e.replicated and key in e.args[1:]}


@pytest.mark.feature("MultiKey")
def test_mset_mget_are_split_per_shard_and_answered_as_one(lab):
    """mset/mget over keys of all three shards: one reply; each key served by its own shard"""
    keys = _keys(lab)
    values = {key: f"v-{key}" for key in keys}
    missing = f"multi-missing-{token()}"
    try:
        with lab.monitor(lab.nodes) as capture:
            with allure.step(f"mset ({len(keys)} keys on 3 shards)"):
                flat = [part for pair in values.items() for part in pair]
                assert ok(lab.proxy.execute_command("MSET", *flat))
            for shard in lab.topology.shards:
                assert lab.wait_replicated(shard.master) >= 1
            with allure.step("mget the same keys and one that does not exist"):
                reply = lab.proxy.execute_command("MGET", *keys, missing)
        assert [text(v) for v in reply] == [*values.values(), None]
        for key, shard in keys.items():
            seen = _touched(capture, key)
            assert seen, f"{key}: no node saw it"
            assert seen <= {n.name for n in shard.nodes}, \
                f"{key} (shard of {shard.master.name}) reached {sorted(seen)}"
            assert shard.master.name in seen, f"{key}: its write never reached its master"
    finally:
        lab.proxy.execute_command("DEL", *keys)


@pytest.mark.feature("MultiKey")
def test_counting_commands_sum_the_shards_replies(lab):
    """exists/touch/unlink/del over keys of all three shards: the counts are summed"""
    keys = list(_keys(lab))
    missing = [f"multi-missing-{token()}-{i}" for i in range(3)]
    everything = keys + missing
    for key in keys:
        assert ok(lab.proxy.execute_command("SET", key, "1"))
    try:
        for key in keys:  # written where the cluster keeps them, not on some single server
            master = lab.client(lab.topology.shard_for_key(key).master)
            assert master.execute_command("EXISTS", key) == 1, f"{key} is not on its master"
        for shard in lab.state.topology.shards:  # the counting reads go to the replicas
            assert lab.wait_replicated(shard.master) >= 1
        with allure.step(f"exists {len(keys)} keys + {len(missing)} missing"):
            assert lab.proxy.execute_command("EXISTS", *everything) == len(keys)
        with allure.step("exists with a key repeated counts it twice, as Redis does"):
            assert lab.proxy.execute_command("EXISTS", keys[0], keys[0], keys[-1]) == 3
        with allure.step("touch"):
            assert lab.proxy.execute_command("TOUCH", *everything) == len(keys)
        half = len(keys) // 2
        with allure.step("unlink the first half (they span shards)"):
            assert lab.proxy.execute_command("UNLINK", *keys[:half], *missing) == half
        with allure.step("del everything: only the second half is left"):
            assert lab.proxy.execute_command("DEL", *everything) == len(keys) - half
        for shard in lab.state.topology.shards:
            assert lab.wait_replicated(shard.master) >= 1
        with allure.step("exists: nothing is left on any node"):
            assert lab.proxy.execute_command("EXISTS", *everything) == 0
        for key in keys:
            master = lab.client(lab.topology.shard_for_key(key).master)
            assert master.execute_command("EXISTS", key) == 0, f"{key} is still on its master"
    finally:
        lab.proxy.execute_command("DEL", *everything)


@pytest.mark.feature("MultiKey")
def test_hash_tags_keep_keys_on_one_shard(lab):
    """{tag}a {tag}b ...: every key with the same hash tag lands on the tag's shard only (a tag
    on every shard, so a proxy that is one server cannot pass by holding the only tag's slot)"""
    topology = lab.topology
    tags: dict[str, str] = {}  # master name -> a tag on its shard
    while len(tags) < len(topology.shards):
        tag = token()
        tags.setdefault(topology.shard_for_key(tag).master.name, tag)
    groups = {tag: [f"{{{tag}}}:{token()}:{i}" for i in range(8)] for tag in tags.values()}
    try:
        with lab.monitor(lab.nodes) as capture:
            for tag, keys in groups.items():
                home = topology.shard_for_key(tag)
                assert all(topology.shard_for_key(k) == home for k in keys)
                with allure.step(f"mset {len(keys)} keys tagged {{{tag}}}"):
                    assert ok(lab.proxy.execute_command(
                        "MSET", *[p for k in keys for p in (k, k)]))
                assert lab.wait_replicated(home.master) >= 1
                with allure.step(f"mget the keys tagged {{{tag}}}"):
                    assert [text(v) for v in lab.proxy.execute_command("MGET", *keys)] == keys
        for tag, keys in groups.items():
            home = topology.shard_for_key(tag)
            for key in keys:
                seen = _touched(capture, key)
                assert seen and seen <= {n.name for n in home.nodes}, \
                    f"{key} reached {sorted(seen)}, not only the shard of {home.master.name}"
            with allure.step(f"the keys tagged {{{tag}}} are all on {home.master.name}"):
                assert lab.client(home.master).execute_command("EXISTS", *keys) == len(keys)
    finally:
        for keys in groups.values():
            with contextlib.suppress(Exception):
                lab.proxy.execute_command("DEL", *keys)


@pytest.mark.feature("MultiKey")
def test_mget_with_a_shard_down_gives_per_element_errors(lab):
    """mget over 3 shards, one shard frozen: its elements fail, the others are served"""
    faults = getattr(lab, "faults", None)
    if faults is None:
        pytest.skip("needs the faults API (lab.faults)")
    keys = _keys(lab)
    for key in keys:
        assert ok(lab.proxy.execute_command("SET", key, key))
    down = lab.state.topology.shards[0]
    for shard in lab.state.topology.shards:
        assert lab.wait_replicated(shard.master) >= 1
    try:
        with NoFailover(lab, down):
            for node in (*down.replicas, down.master):
                faults.freeze(node)
            client = lab.proxy_client()
            with allure.step("mget with one shard frozen (op_timeout 5s)"):
                try:
                    reply = client.execute_command("MGET", *keys)
                except Exception as exc:  # an error for the whole command is the failure
                    pytest.fail(f"MGET failed as a whole: {exc}")
            faults.undo_all()
        allure.attach(repr(reply), name="MGET reply", attachment_type=allure.attachment_type.TEXT)
        for key, value in zip(keys, reply, strict=True):
            if keys[key] == down:
                assert value is None or isinstance(value, Exception), (key, value)
            else:
                assert text(value) == key, f"{key} on a healthy shard: {value!r}"
    finally:
        faults.undo_all()
        heal(lab)
        lab.proxy.execute_command("DEL", *keys)
