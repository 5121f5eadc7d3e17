"""Transactions: MULTI/EXEC through the proxy (Envoy supports them since 1.24, envoy#22729).

A transaction is sent on one connection, command by command, exactly as redis-cli does; the
replies are read raw so that a leaked MOVED is seen as the client would see it.
"""

from __future__ import annotations

from collections import Counter

import allure
import pytest
from tenacity import retry, stop_after_delay, wait_fixed

from lab import waits

from .support.keys import per_shard, text, token
from .support.raw import Raw as _Raw


def _flat(reply: object) -> list[str]:
    if isinstance(reply, list):
        return [x for item in reply for x in _flat(item)]
    return [str(reply)]


@pytest.mark.feature("Transactions")
def test_single_slot_transaction_is_executed_and_mirrored_as_a_unit(lab):
    """multi; set {t}a; incr {t}n; append {t}a; exec -> served, and mirrored as one MULTI/EXEC"""
    tag = token()
    a, n = f"{{{tag}}}a", f"{{{tag}}}n"
    shard = lab.topology.shard_for_key(a)
    mirror = lab.client(lab.mirror)
    raw = _Raw(lab)
    try:
        with lab.monitor([*lab.nodes, lab.mirror]) as capture:
            with allure.step("multi"):
                assert raw.call("MULTI") == "+OK"
            for command in (("SET", a, "x"), ("INCR", n), ("APPEND", a, "y")):
                with allure.step(" ".join(command).lower()):
                    assert raw.call(*command) == "+QUEUED"
            with allure.step("exec"):
                assert raw.call("EXEC") == ["+OK", 1, 2]

            @waits.counted(waits.MIRROR)
            @retry(stop=stop_after_delay(10), wait=wait_fixed(0.05), reraise=True)
            def mirrored() -> None:
                assert text(mirror.get(a)) == "xy"
                assert text(mirror.get(n)) == "1"

            with allure.step("the mirror has the transaction's result"):
                mirrored()
        assert lab.wait_replicated(shard.master) >= 1
        assert text(lab.proxy.execute_command("GET", a)) == "xy"
        on_master = [e.command for e in capture.on(shard.master)
                     if e.command in {"MULTI", "EXEC", "SET", "INCR", "APPEND"}]
        assert on_master == ["MULTI", "SET", "INCR", "APPEND", "EXEC"], on_master
        on_mirror = [e.command for e in capture.on(lab.mirror)
                     if e.command in {"MULTI", "EXEC", "SET", "INCR", "APPEND"}]
        # as a unit: the mirror got the whole transaction, in order, once (envoy#26342)
        assert on_mirror == ["MULTI", "SET", "INCR", "APPEND", "EXEC"], on_mirror
        others = Counter(e.node for e in capture.entries if e.command in {"MULTI", "EXEC"}
                         and not e.replicated and e.node not in {shard.master.name,
                                                                 lab.mirror.name})
        assert not others, f"MULTI/EXEC reached other nodes: {dict(others)}"
    finally:
        raw.close()
        lab.proxy.execute_command("DEL", a, n)


@pytest.mark.feature("Transactions")
@pytest.mark.xfail(strict=True, reason=(
    "envoyproxy/envoy#22729 (redis transactions): a transaction stays on the first key's "
    "shard and redirections are off inside it, so a later key of another shard comes back "
    "as the node's raw MOVED"))
def test_cross_slot_transaction_gives_a_clean_error_never_moved(lab):
    """multi; set k1; set k2 (another shard); exec -> an error, but never a raw MOVED/ASK"""
    keys = list(per_shard(lab.topology, "tx-cross", 1))
    raw = _Raw(lab)
    replies: list[str] = []
    try:
        replies += _flat(raw.call("MULTI"))
        for key in keys:
            replies += _flat(raw.call("SET", key, "v"))
        replies += _flat(raw.call("EXEC"))
    finally:
        raw.close()
        lab.proxy.execute_command("DEL", *keys)
    allure.attach("\n".join(replies), name="replies", attachment_type=allure.attachment_type.TEXT)
    leaked = [r for r in replies if r.startswith(("-MOVED", "-ASK"))]
    assert not leaked, f"the client saw {leaked}"
    assert any(r.startswith("-") for r in replies), "a cross-slot transaction must be refused"
