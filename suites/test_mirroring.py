"""WriteMirroring: every write also reaches redis-mirror, with identical arguments; no read.

Enough writes that a mirror sampling 99% of them fails with probability >= 1 - 10^-6
(0.99^1400 < 10^-6), over several write commands, pipelined so it stays fast.
"""

from __future__ import annotations

from collections import Counter

import allure
import pytest

from .support.keys import errors, run_keys, through_proxy, wait_all_replicated

WRITES = ("SET", "APPEND", "INCRBY", "DEL", "EXPIRE", "HSET", "LPUSH", "MSET")
READS = ("GET", "MGET", "EXISTS", "TTL", "HGET", "LRANGE")
MIN_WRITES = 1400


@pytest.mark.feature("WriteMirroring")
def test_writes_are_mirrored_verbatim_and_reads_are_not(lab):
    """SET, APPEND, INCRBY, DEL, EXPIRE, HSET, LPUSH, MSET through the proxy: MONITOR on
    redis-mirror shows each with identical arguments; GET, MGET, EXISTS, TTL, HGET, LRANGE never"""
    with run_keys(lab) as keys:
        groups = []
        for base in keys.spread(lab.topology, per_shard=8):  # every first byte
            groups.append({"k": base, "n": keys.key(), "h": keys.key(), "l": keys.key(),
                           "m1": keys.key(), "m2": keys.key(), "v": keys.value(),
                           "w": keys.value("tail")})
        # Two pipelines: a key's later writes go only after its first ones were answered.
        first: list[tuple[bytes, ...]] = []
        then: list[tuple[bytes, ...]] = []
        expected: Counter[tuple[bytes, ...]] = Counter()  # what the mirror must execute
        for g in groups:
            first += [(b"SET", g["k"], g["v"]), (b"INCRBY", g["n"], b"7"),
                      (b"HSET", g["h"], b"field", g["v"]), (b"LPUSH", g["l"], g["v"]),
                      (b"MSET", g["m1"], g["v"], g["m2"], g["w"])]
            then += [(b"APPEND", g["k"], g["w"]), (b"EXPIRE", g["k"], b"100000"),
                     (b"DEL", g["m2"])]
        writes = first + then
        for command in writes:
            if command[0] == b"MSET":  # the proxy splits MSET into one SET per key
                for key, value in zip(command[1::2], command[2::2], strict=True):
                    expected[(b"SET", key, value)] += 1
            else:
                expected[command] += 1
        assert len(writes) >= MIN_WRITES
        assert {w[0].decode() for w in writes} == set(WRITES)
        reads = [r for g in groups for r in (
            (b"GET", g["k"]), (b"MGET", g["k"], g["n"]), (b"EXISTS", g["k"]), (b"TTL", g["k"]),
            (b"HGET", g["h"], b"field"), (b"LRANGE", g["l"], b"0", b"-1"))]
        ours = {k for g in groups for k in (g["k"], g["n"], g["h"], g["l"], g["m1"], g["m2"])}

        def on_mirror(entries) -> list:
            return [e for e in entries if e.key in ours and not e.replicated]

        with lab.monitor([lab.mirror]) as capture:
            with allure.step(f"{len(writes)} writes through the proxy, pipelined"):
                replies = through_proxy(lab, first) + through_proxy(lab, then)
            wait_all_replicated(lab)  # reads go to replicas: they must have every write
            with allure.step(f"{len(reads)} reads through the proxy"):
                answers = through_proxy(lab, reads)
            with allure.step("MONITOR on redis-mirror: wait for the mirrored writes"):
                # Mirroring is fire-and-forget: the client's reply does not wait for it.
                # Envoy sends each mirror request when it routes the write, so once the
                # mirror has been quiet for 2 s nothing more is coming.
                capture.wait_until(lambda entries: len(on_mirror(entries)) >= sum(
                    expected.values()), timeout=30, quiet=2.0)
        assert not errors(replies), f"writes failed: {errors(replies)[:3]}"
        for g, start in zip(groups, range(0, len(answers), 6), strict=True):
            get, mget, exists, ttl, hget, lrange = answers[start:start + 6]
            assert get == g["v"] + g["w"] and mget == [g["v"] + g["w"], b"7"]
            assert exists == 1 and isinstance(ttl, int) and 0 < ttl <= 100000
            assert hget == g["v"] and lrange == [g["v"]]
        seen = on_mirror(capture.entries)
        read_on_mirror = [e.line() for e in seen if e.command in READS]
        assert not read_on_mirror, f"reads reached the mirror: {read_on_mirror[:3]}"
        mirrored = Counter((e.command.encode(), *e.raw[1:]) for e in seen
                           if e.command not in READS)
        missing = expected - mirrored
        unexpected = mirrored - expected
        assert not missing, f"{sum(missing.values())} of {sum(expected.values())} writes " \
                            f"did not reach the mirror verbatim, e.g. {list(missing)[:2]}"
        assert not unexpected, f"the mirror executed what was not sent: {list(unexpected)[:2]}"
