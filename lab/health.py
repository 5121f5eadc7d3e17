"""A running lab's health, read now: Envoy's admin, the proxy, every node, the roles and slots.

Used by `status` (the truth, not the snapshot taken at `up`) and by attaching a test
session to a lab (one line naming what is down, instead of a failure per test).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from lab.backends.base import Access
from lab.state import LabState
from lab.topology import Node, Topology, from_cluster_slots

TIMEOUT = 2.0


def node_client(access: Access, node: Node, timeout: float = TIMEOUT) -> redis.Redis:
    """A client of one node, as the lab's admin user when the backend has one."""
    host, port = access.address(node)
    credentials: Callable[[], dict[str, str]] | None = getattr(access, "credentials", None)
    auth = credentials() if credentials is not None else {}
    return redis.Redis(host, port, socket_timeout=timeout, socket_connect_timeout=timeout,
                       protocol=2, username=auth.get("username"), password=auth.get("password"))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass
class Health:
    problems: list[str] = field(default_factory=list)
    topology: Topology | None = None  # from CLUSTER SLOTS now, if any node answered

    @property
    def ok(self) -> bool:
        return not self.problems


def check(state: LabState, access: Access) -> Health:
    """Envoy's admin answers, the proxy answers PING, every node and the mirror answer."""
    health = Health()
    try:
        access.admin_get("/ready")
    except Exception as exc:
        where = state.admin.get("socket") or f"{state.admin.get('host')}:{state.admin.get('port')}"
        health.problems.append(f"Envoy's admin ({where}) does not answer: {_reason(exc)}")
    proxy = None
    try:
        proxy = access.proxy_client()
        proxy.execute_command("PING")
    except Exception as exc:
        health.problems.append(f"the proxy {state.proxy.get('host')}:{state.proxy.get('port')} "
                               f"does not answer PING: {_reason(exc)}")
    finally:
        if proxy is not None:
            with contextlib.suppress(Exception):
                proxy.close()
    nodes = list(state.topology.nodes)
    if state.mirror:
        nodes.append(state.mirror_node)
    names = {n.address: n.name for n in state.topology.nodes}
    for node in nodes:
        try:
            with node_client(access, node) as client:
                client.ping()
                if health.topology is None and node.name != state.mirror_node.name:
                    reply = client.execute_command("CLUSTER", "SLOTS", NEVER_DECODE=True)
                    health.topology = from_cluster_slots(
                        reply, lambda h, p: names.get(f"{h}:{p}", f"{h}:{p}"))
        except Exception as exc:
            health.problems.append(f"{node.name} ({node.address}) does not answer: "
                                   f"{_reason(exc)}")
    return health


def describe_topology(topology: Topology) -> list[str]:
    lines = []
    for index, shard in enumerate(topology.shards):
        ranges = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in shard.slots)
        replicas = ", ".join(f"{r.name} {r.address}" for r in shard.replicas) or "none"
        lines.append(f"  shard[{index}] slots {ranges}: master {shard.master.name} "
                     f"{shard.master.address}, replica {replicas}")
    return lines


def topology_json(topology: Topology | None) -> list[dict[str, Any]] | None:
    return topology.to_list() if topology is not None else None
