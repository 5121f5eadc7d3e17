"""Lab.wait_replicated when a sidecar hides where the replicas connect from: on kind, Istio's
inbound sidecar makes every replica's link come from 127.0.0.6, so the master's INFO names no
replica the lab knows; its CLUSTER SLOTS does, and those replicas are asked directly (their
acknowledged offset is only sent once a second)."""

from __future__ import annotations

from typing import Any

import pytest

from lab.handle import Lab
from lab.state import LabState
from lab.topology import Node

MASTER = Node("redis-cluster-0", "10.244.0.6", 6379)
REPLICA = Node("redis-cluster-3", "10.244.0.13", 6379)
OTHER = Node("redis-cluster-4", "10.244.0.12", 6379)


class Master:
    """The master's INFO replication: one link, from the sidecar's address, acknowledged at
    an old offset; its CLUSTER SLOTS names its replica (and another shard's)."""

    def __init__(self, ack: int) -> None:
        self.ack = ack

    def info(self, section: str) -> dict[str, Any]:
        return {"master_repl_offset": 100,
                "slave0": {"ip": "127.0.0.6", "port": 6379, "state": "online",
                           "offset": self.ack}}

    def execute_command(self, *args: str, **options: object) -> list[Any]:
        assert args == ("CLUSTER", "SLOTS")
        return [[0, 5460, [b"10.244.0.6", 6379, b"m0"], [b"10.244.0.13", 6379, b"r3"]],
                [5461, 10922, [b"10.244.0.9", 6379, b"m9"], [b"10.244.0.12", 6379, b"r4"]]]


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch) -> Lab:
    monkeypatch.setattr(Lab, "nodes", property(lambda self: (MASTER, REPLICA, OTHER)))
    monkeypatch.setattr(Lab, "spares", property(lambda self: ()))
    handle = Lab(LabState.starting("k", "kind", "REPLICA", True), _NoAccess())  # type: ignore[arg-type]
    return handle


class _NoAccess:
    def fault(self, node: Node, action: str) -> None:
        raise AssertionError


def test_the_hidden_replica_is_asked_what_it_processed(lab: Lab, monkeypatch):
    asked: list[str] = []
    monkeypatch.setattr(lab, "client", lambda node: Master(ack=40))  # REPLCONF ACK not yet
    monkeypatch.setattr(lab, "_processed_offset",
                        lambda node: asked.append(node.name) or 100)
    assert lab.wait_replicated(MASTER, timeout_ms=50) == 1
    assert asked == ["redis-cluster-3"]  # its own replica, not another master's


def test_without_a_match_the_acknowledged_offset_still_counts(lab: Lab, monkeypatch):
    master = Master(ack=100)
    master.execute_command = lambda *args, **options: [[0, 5460, [b"10.244.0.6", 6379, b"m0"]]]
    monkeypatch.setattr(lab, "client", lambda node: master)
    assert lab.wait_replicated(MASTER, timeout_ms=50) == 1
