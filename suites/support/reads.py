"""Where reads land: GETs through the proxy, counted by MONITOR on all six nodes at once.

The read-policy features share this: each asserts a different split of the same counts, so a
project test can show that a lab with another policy fails each assertion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import allure

from .keys import ok, per_shard, text

# ReadPolicyAny: reads of a shard are spread over its master and replica. With p = 1/2 per
# read and READS_PER_SHARD reads, each node gets at least ANY_MIN_SHARE of them except with
# probability < 1e-6 (binomial tail, computed in `binomial_tail` and checked in the test).
KEYS_PER_SHARD = 2
READS_PER_KEY = 50
READS_PER_SHARD = KEYS_PER_SHARD * READS_PER_KEY
ANY_MIN_SHARE = 0.22


def binomial_tail(n: int, k: int, p: float = 0.5) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@dataclass(frozen=True)
class ShardReads:
    shard: str  # its master's name
    master: int
    replica: int
    elsewhere: int  # on a node of another shard, or the mirror
    expected: int


def observe_reads(lab, keys_per_shard: int = KEYS_PER_SHARD,
                  reads_per_key: int = READS_PER_KEY) -> list[ShardReads]:
    """Write fresh keys on every shard, then read each `reads_per_key` times under MONITOR."""
    keys = per_shard(lab.topology, "reads", keys_per_shard)
    for key in keys:
        assert ok(lab.proxy.execute_command("SET", key, key))
    for shard in lab.topology.shards:
        assert lab.wait_replicated(shard.master) >= 1, f"{shard.master.name}: WAIT saw no replica"
    try:
        with lab.monitor() as capture:
            for key in keys:
                with allure.step(f"get {key} x{reads_per_key}"):
                    for _ in range(reads_per_key):
                        assert text(lab.proxy.execute_command("GET", key)) == key
    finally:
        lab.proxy.execute_command("DEL", *keys)
    found = []
    for shard in lab.topology.shards:
        ours = [k for k, s in keys.items() if s == shard]
        gets = [e for e in capture.entries if e.command == "GET" and e.args[1:2]
                and e.args[1] in ours and not e.replicated]
        names = {n.name for n in shard.replicas}
        found.append(ShardReads(
            shard=shard.master.name,
            master=sum(1 for e in gets if e.node == shard.master.name),
            replica=sum(1 for e in gets if e.node in names),
            elsewhere=sum(1 for e in gets if e.node not in names | {shard.master.name}),
            expected=len(ours) * reads_per_key,
        ))
    allure.attach("\n".join(f"{r.shard}: master {r.master}, replica {r.replica}, "
                            f"elsewhere {r.elsewhere} of {r.expected}" for r in found),
                  name="reads per shard", attachment_type=allure.attachment_type.TEXT)
    return found


def assert_reads_on(found: list[ShardReads], where: str) -> None:
    """Every read of every shard reached its `where` ("master" or "replica") and nothing else."""
    for reads in found:
        assert reads.elsewhere == 0, f"{reads.shard}: {reads.elsewhere} reads on another shard"
        on = reads.master if where == "master" else reads.replica
        assert on == reads.expected, (
            f"shard of {reads.shard}: {on} of {reads.expected} reads on its {where} "
            f"(master {reads.master}, replica {reads.replica})")


def assert_reads_spread(found: list[ShardReads]) -> None:
    """Every shard's reads are shared by master and replica, each at least ANY_MIN_SHARE."""
    for reads in found:
        assert reads.elsewhere == 0, f"{reads.shard}: {reads.elsewhere} reads on another shard"
        assert reads.master + reads.replica == reads.expected
        least = math.ceil(ANY_MIN_SHARE * reads.expected)
        assert min(reads.master, reads.replica) >= least, (
            f"shard of {reads.shard}: master {reads.master}, replica {reads.replica} of "
            f"{reads.expected}: not spread (each must get >= {least})")
