"""Lab.wait_replicated when a sidecar hides where the replicas connect from: on kind, Istio's
inbound sidecar makes every replica's link come from 127.0.0.6, so the master's INFO names no
replica the lab knows; its CLUSTER NODES does, and those replicas are asked directly (their
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
    an old offset; its CLUSTER NODES names its replica."""

    def __init__(self, ack: int) -> None:
        self.ack = ack

    def info(self, section: str) -> dict[str, Any]:
        return {"master_repl_offset": 100,
                "slave0": {"ip": "127.0.0.6", "port": 6379, "state": "online",
                           "offset": self.ack}}

    def execute_command(self, *args: str) -> bytes:
        assert args == ("CLUSTER", "NODES")
        return (b"m0 10.244.0.6:6379@16379 myself,master - 0 0 1 connected 0-5460\n"
                b"r3 10.244.0.13:6379@16379 slave m0 0 0 1 connected\n"
                b"r4 10.244.0.12:6379@16379 slave m9 0 0 2 connected\n")


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
    master.execute_command = lambda *args: b"m0 10.244.0.6:6379@16379 myself,master - 0 0 1\n"
    monkeypatch.setattr(lab, "client", lambda node: master)
    assert lab.wait_replicated(MASTER, timeout_ms=50) == 1
