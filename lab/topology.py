"""The Redis Cluster as the suite sees it: shards, their slot ranges, masters and replicas."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.slots import key_slot


@dataclass(frozen=True)
class Node:
    name: str  # like the pod: redis-cluster-0 .. redis-cluster-5
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "host": self.host, "port": self.port}


@dataclass(frozen=True)
class Shard:
    slots: tuple[tuple[int, int], ...]
    master: Node
    replicas: tuple[Node, ...] = field(default_factory=tuple)

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.master, *self.replicas)

    def to_dict(self) -> dict[str, Any]:
        return {
            "slots": [[first, last] for first, last in self.slots],
            "master": self.master.to_dict(),
            "replicas": [replica.to_dict() for replica in self.replicas],
        }


@dataclass(frozen=True)
class Topology:
    shards: tuple[Shard, ...]

    @property
    def nodes(self) -> tuple[Node, ...]:
        return tuple(node for shard in self.shards for node in shard.nodes)

    def shard_for_slot(self, slot: int) -> Shard:
        for shard in self.shards:
            if shard.owns(slot):
                return shard
        raise KeyError(f"no shard owns slot {slot}")

    def shard_for_key(self, key: str | bytes) -> Shard:
        return self.shard_for_slot(key_slot(key))

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def to_list(self) -> list[dict[str, Any]]:
        return [shard.to_dict() for shard in self.shards]

    @classmethod
    def from_list(cls, shards: Sequence[dict[str, Any]]) -> Topology:
        def node(raw: dict[str, Any]) -> Node:
            return Node(name=raw["name"], host=raw["host"], port=int(raw["port"]))

        return cls(
            shards=tuple(
                Shard(
                    slots=tuple((int(a), int(b)) for a, b in raw["slots"]),
                    master=node(raw["master"]),
                    replicas=tuple(node(r) for r in raw["replicas"]),
                )
                for raw in shards
            )
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def from_cluster_slots(reply: Sequence[Any], name_of: Callable[[str, int], str]) -> Topology:
    """Build a topology from a raw CLUSTER SLOTS reply (one entry per slot range).

    Ranges served by the same master are grouped into one shard; `name_of(host, port)`
    gives each node its pod-like name.
    """
    grouped: dict[str, dict[str, Any]] = {}
    for entry in reply:
        first, last, master_raw, *replica_raw = entry
        master = Node(name_of(_text(master_raw[0]), int(master_raw[1])), _text(master_raw[0]),
                      int(master_raw[1]))
        replicas = tuple(
            Node(name_of(_text(r[0]), int(r[1])), _text(r[0]), int(r[1])) for r in replica_raw
        )
        group = grouped.setdefault(master.address, {"master": master, "slots": [], "replicas": ()})
        group["slots"].append((int(first), int(last)))
        group["replicas"] = tuple(sorted(set(group["replicas"]) | set(replicas),
                                         key=lambda n: n.name))
    shards = [
        Shard(slots=tuple(sorted(g["slots"])), master=g["master"], replicas=g["replicas"])
        for g in grouped.values()
    ]
    shards.sort(key=lambda s: s.slots[0][0])
    return Topology(shards=tuple(shards))
