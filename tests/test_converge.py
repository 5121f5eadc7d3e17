"""The cluster counts as converged only when every node hands out the same full topology.

Canned CLUSTER INFO / CLUSTER SLOTS replies stand in for the nodes: what is tested is the
decision, and the lag it guards against (a replica's CLUSTER SLOTS that does not yet show
another shard's replica) cannot be produced on demand with real nodes.
"""

from __future__ import annotations

from typing import Any

import pytest

from lab.backends import converge
from lab.errors import LabError
from lab.pipeline import StageKey, poll
from lab.pipeline.stages import stage
from lab.topology import Node, Topology

NODES = [Node(f"redis-cluster-{i}", "127.0.0.1", 7000 + i) for i in range(6)]
NAMES = {n.address: n.name for n in NODES}
FULL = [[0, 5460, [b"127.0.0.1", 7000], [b"127.0.0.1", 7004]],
        [5461, 10922, [b"127.0.0.1", 7001], [b"127.0.0.1", 7005]],
        [10923, 16383, [b"127.0.0.1", 7002], [b"127.0.0.1", 7003]]]
LAGGING = [FULL[0], FULL[1], [10923, 16383, [b"127.0.0.1", 7002]]]  # 7003's role not heard yet


class _Node:
    def __init__(self, replies: list[list[Any]]) -> None:
        self.replies = replies

    def __enter__(self) -> _Node:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute_command(self, *args: Any, **_: Any) -> Any:
        if args == ("CLUSTER", "INFO"):
            return b"cluster_state:ok\r\ncluster_size:3\r\n"
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def wait_converged(views: dict[str, _Node], seconds: float) -> Topology:
    """The converge stage as the pipeline runs it: its probe polled until it holds."""
    view = converge.ClusterView(NODES, lambda n: views[n.name], NAMES)  # type: ignore[arg-type,return-value]
    poll(view.not_converged, stage(StageKey.CONVERGE), seconds, 0.01)
    return view.topology


def test_a_lagging_node_is_waited_for() -> None:
    views = {n.name: _Node([FULL]) for n in NODES}
    views["redis-cluster-5"] = _Node([LAGGING, LAGGING, FULL])
    topology = wait_converged(views, 5)
    assert [s.replicas[0].name for s in topology.shards] == \
        ["redis-cluster-4", "redis-cluster-5", "redis-cluster-3"]
    assert views["redis-cluster-5"].replies == [FULL]  # asked until it caught up


def test_a_node_that_never_catches_up_is_named() -> None:
    views = {n.name: _Node([FULL]) for n in NODES}
    views["redis-cluster-5"] = _Node([LAGGING])
    with pytest.raises(LabError, match="redis-cluster-5: CLUSTER SLOTS does not show"):
        wait_converged(views, 0.5)


def test_nodes_that_disagree_are_named() -> None:
    other = [FULL[0], [5461, 10922, [b"127.0.0.1", 7005], [b"127.0.0.1", 7001]], FULL[2]]
    views = {n.name: _Node([FULL]) for n in NODES}
    views["redis-cluster-2"] = _Node([other])
    with pytest.raises(LabError, match="CLUSTER SLOTS of redis-cluster-2 differs"):
        wait_converged(views, 0.5)
