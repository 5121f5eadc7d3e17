"""Reading the Redis Cluster through `redis-cli` output: CLUSTER INFO and CLUSTER NODES."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lab.errors import LabError
from lab.topology import Topology, from_cluster_slots


def info_fields(text: str) -> dict[str, str]:
    """The `key:value` lines of a CLUSTER INFO or INFO reply."""
    info = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            info[key] = value
    return info


def formed(text: str, nodes: int) -> bool:
    """CLUSTER INFO says the cluster is up with all its nodes (so `create` must not rerun)."""
    info = info_fields(text)
    return info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) >= nodes


def slots_from_nodes(text: str) -> list[list[Any]]:
    """A CLUSTER SLOTS-shaped reply built from CLUSTER NODES (line based, every version)."""
    masters: dict[str, dict[str, Any]] = {}
    replicas: dict[str, list[list[Any]]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        node_id, address, flags, master_id = fields[0], fields[1], fields[2].split(","), fields[3]
        host_port = address.split("@", 1)[0]
        host, _, port = host_port.rpartition(":")
        entry = [host, int(port), node_id]
        if "master" in flags:
            ranges = []
            for slot in fields[8:]:
                if slot.startswith("["):  # a migrating/importing marker, not an owned range
                    continue
                first, _, last = slot.partition("-")
                ranges.append((int(first), int(last or first)))
            masters[node_id] = {"entry": entry, "ranges": ranges}
        elif "slave" in flags or "replica" in flags:
            replicas.setdefault(master_id, []).append(entry)
    reply: list[list[Any]] = []
    for node_id, master in masters.items():
        for first, last in master["ranges"]:
            reply.append([first, last, master["entry"], *replicas.get(node_id, [])])
    if not reply:
        raise LabError("CLUSTER NODES shows no master owning slots")
    return sorted(reply, key=lambda r: r[0])


def topology_from_nodes(text: str, name_of: Callable[[str, int], str]) -> Topology:
    return from_cluster_slots(slots_from_nodes(text), name_of)
