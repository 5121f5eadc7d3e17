"""Test keys: unique per test run, spread over every shard on purpose."""

from __future__ import annotations

import uuid

from lab.topology import Shard, Topology

# The tutorial's keys and the slot range it shows each one landing in.
TUTORIAL_KEYS = {
    "b": (0, 5460), "f": (0, 5460),
    "c": (5461, 10922), "g": (5461, 10922),
    "a": (10923, 16383), "d": (10923, 16383), "e": (10923, 16383), "h": (10923, 16383),
}


def token() -> str:
    return uuid.uuid4().hex[:10]


def per_shard(topology: Topology, prefix: str, count: int) -> dict[str, Shard]:
    """`count` fresh keys for every shard, mapped to the shard that owns them."""
    wanted = {shard.master.name: count for shard in topology.shards}
    keys: dict[str, Shard] = {}
    index = 0
    while any(wanted.values()):
        key = f"{prefix}-{token()}-{index}"
        index += 1
        shard = topology.shard_for_key(key)
        if wanted[shard.master.name]:
            wanted[shard.master.name] -= 1
            keys[key] = shard
    return keys


def text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def ok(reply: object) -> bool:
    return reply is True or text(reply) == "OK"
