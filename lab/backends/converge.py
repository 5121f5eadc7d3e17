"""Waiting for a freshly created Redis Cluster to converge, on any backend.

`redis-cli --cluster create` returns before every node agrees: the lab is usable once every
node says `cluster_state:ok` and every node's CLUSTER SLOTS shows the same 3 shards with a
replica each. Every node, not one: any node may be the proxy's seed, and a replica that has not
yet heard which node replicates which master hands out a topology without that replica (a
proxy seeded by it then has no replica to read from until its next refresh).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from lab.errors import LabError
from lab.topology import Node, Topology, from_cluster_slots


class _NotConverged(Exception):
    pass


class NotReady(Exception):
    """Raised inside a `retry_until` function: not yet, ask again."""


def retry_until(seconds: float, interval: float = 0.05) -> Any:
    """Retry the decorated function on NotReady, Redis and socket errors for `seconds`; the
    last error is raised as is (every backend's readiness waits are made of this)."""
    return retry(stop=stop_after_delay(seconds), wait=wait_fixed(interval),
                 retry=retry_if_exception_type((NotReady, redis.RedisError, OSError)),
                 reraise=True)


class ClusterView:
    """The converge stage's probe: `not_converged()` is None once every node agrees, and
    `topology` is then what they agree on."""

    def __init__(self, nodes: Sequence[Node], connect: Callable[[Node], redis.Redis],
                 names_by_address: Mapping[str, str]) -> None:
        self.nodes = list(nodes)
        self.connect = connect
        self.names_by_address = dict(names_by_address)
        self._topology: Topology | None = None

    @property
    def topology(self) -> Topology:
        if self._topology is None:
            raise LabError("the cluster's topology is not known before it converged")
        return self._topology

    def _name_of(self, host: str, port: int) -> str:
        return self.names_by_address.get(f"{host}:{port}", f"{host}:{port}")

    def not_converged(self) -> str | None:
        try:
            self._topology = self._read()
            return None
        except (_NotConverged, redis.RedisError, OSError) as exc:
            return str(exc) or type(exc).__name__

    def _read(self) -> Topology:
        for node in self.nodes:
            with self.connect(node) as client:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    raise _NotConverged(f"{node.name}: cluster_state not ok")
        views = {}
        for node in self.nodes:
            with self.connect(node) as client:
                reply = client.execute_command("CLUSTER", "SLOTS", NEVER_DECODE=True)
            view = from_cluster_slots(reply, self._name_of)
            if len(view.shards) != 3 or any(len(s.replicas) != 1 for s in view.shards):
                raise _NotConverged(f"{node.name}: CLUSTER SLOTS does not show 3 shards with "
                                    "a replica each yet")
            views[node.name] = view
        topology = views[self.nodes[0].name]
        differ = [name for name, view in views.items() if view != topology]
        if differ:
            raise _NotConverged(f"CLUSTER SLOTS of {', '.join(differ)} differs from "
                                f"{self.nodes[0].name}'s")
        return topology
