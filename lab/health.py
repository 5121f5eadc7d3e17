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
from lab.envoy.admin import CLUSTERS_JSON, parse_hosts
from lab.model import PROXY_CLUSTER
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


SLOTS = 16384


def check(state: LabState, access: Access, *, tutorial: bool = False) -> Health:
    """Envoy's admin answers, the proxy answers PING, every node and the mirror answer.

    With `tutorial` (what `status` asks), also what the tutorial needs of the cluster: every
    node in cluster_state:ok, all 16,384 slots served, each shard with a master and a
    replica, and (unless a mutant lab: the suite judges that) the proxy holding every node as
    a healthy host. Attaching a suite asks only for the first part: a replica still catching
    up after a fault is the suite's to wait for, not a reason to refuse the lab."""
    health = Health()
    try:
        access.admin_get("/ready")
    except Exception as exc:
        where = state.admin.socket or state.admin.via
        health.problems.append(f"Envoy's admin ({where}) does not answer: {_reason(exc)}")
    proxy = None
    try:
        proxy = access.proxy_client()
        proxy.execute_command("PING")
    except Exception as exc:
        health.problems.append(f"the proxy {state.proxy.host}:{state.proxy.port} "
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
                if node.name == state.mirror_node.name:
                    continue
                if tutorial:
                    health.problems += _cluster_state(node, client)
                if health.topology is None:
                    health.topology = _slots(client, names)
        except Exception as exc:
            health.problems.append(f"{node.name} ({node.address}) does not answer: "
                                   f"{_reason(exc)}")
    if tutorial and health.topology is not None:
        health.problems += cluster_problems(health.topology)
        if not state.envoyfilters:
            health.problems += proxy_problems(access, len(health.topology.nodes))
    return health


def _cluster_state(node: Node, client: redis.Redis) -> list[str]:
    info = _text(client.execute_command("CLUSTER", "INFO"))
    if "cluster_state:ok" in info:
        return []
    found = [ln.strip() for ln in info.splitlines() if ln.startswith("cluster_state:")]
    return [f"{node.name} ({node.address}) says {(found or ['no cluster_state'])[0]}"]


def _slots(client: redis.Redis, names: dict[str, str]) -> Topology:
    reply = client.execute_command("CLUSTER", "SLOTS", NEVER_DECODE=True)
    return from_cluster_slots(reply, lambda h, p: names.get(f"{h}:{p}", f"{h}:{p}"))


def _text(reply: Any) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def cluster_problems(topology: Topology) -> list[str]:
    """What keeps CLUSTER SLOTS' view from the tutorial's: uncovered slots, a shard alone."""
    problems = []
    served = sum(b - a + 1 for shard in topology.shards for a, b in shard.slots)
    if served < SLOTS:
        problems.append(f"{SLOTS - served:,} of {SLOTS:,} slots are served by no node "
                        "(CLUSTER SLOTS)")
    problems += [f"shard of master {shard.master.name} ({shard.master.address}) has no "
                 "replica" for shard in topology.shards if not shard.replicas]
    return problems


def proxy_problems(access: Access, nodes: int) -> list[str]:
    """The proxy's view: custom-redis-cluster holds every node, each healthy."""
    try:
        hosts = parse_hosts(access.admin_get(CLUSTERS_JSON), PROXY_CLUSTER)
    except Exception as exc:
        return [f"cannot read the proxy's hosts (Envoy's /clusters): {_reason(exc)}"]
    problems = []
    if len(hosts) != nodes:
        problems.append(f"the proxy's {PROXY_CLUSTER} holds {len(hosts)} hosts, "
                        f"CLUSTER SLOTS lists {nodes} nodes")
    problems += [f"the proxy's host {host} is {flags}" for host, flags in sorted(hosts.items())
                 if flags != "healthy"]
    return problems


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
