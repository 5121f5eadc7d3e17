"""Test keys that cannot pass by accident.

Every test takes a `RunKeys` (`with run_keys(lab) as keys:`): its keys are random bytes
(binary-safe: any byte value, no readable prefix) ending in an id unique to that test run,
spread over the whole keyspace: `keys.spread()` gives one key for every possible first
byte (so a prefix route covering only some keys, or diverting some, is hit) and enough keys
on every shard. Values carry the run id too, so a key left by an earlier run can never
match. On exit the keys are deleted from the nodes that own them and from the mirror,
directly (not through the proxy, which may be the thing that is broken).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator

from redis.crc import key_slot

from lab import waits
from lab.handle import Lab
from lab.topology import Shard, Topology

# The tutorial's keys and the slot range it shows each one landing in.
TUTORIAL_KEYS = {
    "b": (0, 5460), "f": (0, 5460),
    "c": (5461, 10922), "g": (5461, 10922),
    "a": (10923, 16383), "d": (10923, 16383), "e": (10923, 16383), "h": (10923, 16383),
}
SLOTS = 16384


class RunKeys:
    """Fresh keys and values for one test run; remembers every key it handed out."""

    def __init__(self) -> None:
        self.run = os.urandom(6)  # the run id, at the end of every key and in every value
        self.issued: list[bytes] = []

    def key(self, first: int | None = None) -> bytes:
        """A random binary key (first byte `first` if given) ending in the run id."""
        head = bytes([first]) if first is not None else os.urandom(1)
        key = head + os.urandom(7) + self.run
        self.issued.append(key)
        return key

    def take(self, keys: Iterable[str | bytes]) -> list[bytes]:
        """Fixed keys (the tutorial's a..h) this run writes and must remove."""
        taken = [k.encode() if isinstance(k, str) else k for k in keys]
        self.issued.extend(taken)
        return taken

    def value(self, tag: str = "") -> bytes:
        """A value no other run can have written: random bytes, the run id, a tag."""
        return os.urandom(4) + b"\x00\r\n\"" + self.run + tag.encode()

    def spread(self, topology: Topology, per_shard: int = 8) -> list[bytes]:
        """One key for each of the 256 possible first bytes, then more until every shard
        has at least `per_shard` of them."""
        keys = [self.key(first) for first in range(256)]
        counts = {shard.master.name: 0 for shard in topology.shards}
        for key in keys:
            counts[topology.shard_for_slot(key_slot(key)).master.name] += 1
        while min(counts.values()) < per_shard:
            key = self.key()
            name = topology.shard_for_slot(key_slot(key)).master.name
            if counts[name] < per_shard:
                counts[name] += 1
                keys.append(key)
        return keys

    def per_shard(self, topology: Topology, count: int) -> dict[bytes, Shard]:
        """`count` fresh keys on every shard, mapped to their shard."""
        wanted = {shard.master.name: count for shard in topology.shards}
        found: dict[bytes, Shard] = {}
        while any(wanted.values()):
            key = self.key()
            shard = topology.shard_for_slot(key_slot(key))
            if wanted[shard.master.name]:
                wanted[shard.master.name] -= 1
                found[key] = shard
        return found

    def in_slot(self, slot: int, count: int) -> list[bytes]:
        """`count` fresh keys that all hash to `slot` (through a hash tag)."""
        def braceless(size: int) -> bytes:  # a { or } inside would end the hash tag early
            return os.urandom(size).replace(b"{", b"(").replace(b"}", b")")

        run = self.run.replace(b"{", b"(").replace(b"}", b")")
        tag = braceless(8) + run
        while key_slot(tag) != slot:
            tag = braceless(8) + run
        keys = [b"{" + tag + b"}" + os.urandom(6) for _ in range(count)]
        assert all(key_slot(k) == slot for k in keys)
        self.issued.extend(keys)
        return keys

    def cleanup(self, lab: Lab) -> None:
        """Delete every key handed out, on its slot's master (now) and on the mirror."""
        if not self.issued:
            return
        topology = lab.topology
        by_master: dict[str, list[bytes]] = {}
        for key in self.issued:
            by_master.setdefault(topology.shard_for_slot(key_slot(key)).master.name,
                                 []).append(key)
        for name, keys in by_master.items():
            with contextlib.suppress(Exception):
                pipe = lab.client(name).pipeline(transaction=False)
                for key in keys:
                    pipe.delete(key)
                pipe.execute(raise_on_error=False)
        with contextlib.suppress(Exception):
            pipe = lab.client(lab.mirror).pipeline(transaction=False)
            for key in self.issued:
                pipe.delete(key)
            pipe.execute(raise_on_error=False)


@contextlib.contextmanager
def run_keys(lab: Lab) -> Iterator[RunKeys]:
    keys = RunKeys()
    try:
        yield keys
    finally:
        keys.cleanup(lab)


# ---- readable keys, for the extended profile's tests (suites/test_ext_*.py) -------------
def token() -> str:
    return uuid.uuid4().hex[:10]


def per_shard(topology: Topology, prefix: str, count: int) -> dict[str, Shard]:
    """`count` fresh readable keys (`<prefix>-<token>-<n>`) for every shard, mapped to it.

    The tutorial profile uses `RunKeys` (binary, no prefix) instead."""
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


def show(key: bytes) -> str:
    """A key as a person reads it in an assertion message."""
    return repr(key)


def text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def ok(reply: object) -> bool:
    return reply is True or text(reply) == "OK"


def through_proxy(lab: Lab, commands: Iterable[tuple[object, ...]]) -> list[object]:
    """Send commands through the proxy in one pipeline; errors come back as exceptions in
    the list (a MOVED or ASK the client sees is such an error)."""
    pipe = lab.proxy.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(pipe.execute(raise_on_error=False))


def errors(replies: Iterable[object]) -> list[str]:
    return [f"{type(r).__name__}: {r}" for r in replies if isinstance(r, Exception)]


def moved_and_ask_by_node(lab: Lab) -> dict[str, int]:
    """MOVED + ASK replies each node has given so far (INFO errorstats, Redis >= 6.2)."""
    found = str(lab.client(lab.nodes[0]).info("server").get("redis_version", "0"))
    version = tuple(int(p) for p in found.split(".")[:2] if p.isdigit())
    assert version >= (6, 2), f"INFO errorstats needs Redis >= 6.2, not {found}"
    counts = {}
    for node in lab.nodes:
        stats = lab.client(node).info("errorstats")
        counts[node.name] = sum(int(stats.get(f"errorstat_{kind}", {}).get("count", 0))
                                for kind in ("MOVED", "ASK"))
    return counts


def wait_proxy_settled(lab: Lab, keys: list[bytes], seconds: float = 10) -> bool:
    """Until reading `keys` through the proxy makes no node answer MOVED/ASK: after an earlier
    test moved slots, Envoy's slot map may lag until its next refresh. Gives up (False) at
    the deadline; the caller's assertions then judge the proxy as it is."""
    deadline = time.monotonic() + seconds
    with waits.waiting(waits.REFRESH):
        while True:
            before = moved_and_ask_by_node(lab)
            through_proxy(lab, [("GET", k) for k in keys])
            if moved_and_ask_by_node(lab) == before:
                return True
            if time.monotonic() >= deadline:
                return False


def wait_all_replicated(lab: Lab) -> None:
    """WAIT 1 on every master; every result is asserted (the replica has every write)."""
    for shard in lab.topology.shards:
        acked = lab.wait_replicated(shard.master)
        assert acked >= 1, f"WAIT 1 on {shard.master.name} returned {acked}"
