"""The stages every lab goes through, in order, on every backend.

A stage is a name, what it does, the condition it waits for and how long it may take. The
backend (its runtime, lab.pipeline.runtime) says how it carries each stage out; the order,
the waits and their timeouts are here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class StageKey(StrEnum):
    RENDER = "render"
    INFRASTRUCTURE = "infrastructure"
    CONTROL_PLANE = "control-plane"
    NODES = "nodes"
    CLUSTER = "cluster"
    CONVERGE = "converge"
    PROXY = "proxy"
    PROVE = "prove"
    STOP = "stop"
    REMOVE = "remove"


@dataclass(frozen=True)
class Stage:
    key: StageKey
    title: str
    until: str = ""  # the condition the stage waits for ("" : it waits for nothing)
    timeout_s: float | None = None  # the default; a runtime may need longer (kind)


UP: tuple[Stage, ...] = (
    Stage(StageKey.RENDER, "render the manifests into the lab model",
          "every EnvoyFilter file holds EnvoyFilters with patches"),
    Stage(StageKey.INFRASTRUCTURE, "prepare what the pods run on"),
    Stage(StageKey.CONTROL_PLANE, "start the control plane"),
    Stage(StageKey.NODES, "start the Redis nodes, redis-mirror and the client",
          "every node answers PING", 10.0),
    Stage(StageKey.CLUSTER, "form the cluster: redis-cli --cluster create --cluster-replicas 1",
          "redis-cli exits 0"),
    Stage(StageKey.CONVERGE, "wait for the cluster to converge",
          "every node says cluster_state:ok and shows 3 shards with a replica each", 30.0),
    Stage(StageKey.PROXY, "start the proxy (Envoy, as the client's sidecar)",
          "every node is a healthy host of Envoy's Redis cluster (not asked of a lab with "
          "extra EnvoyFilters: the suite judges its proxy)", 30.0),
    Stage(StageKey.PROVE, "prove the proxy",
          "the control plane delivered every EnvoyFilter, the redis_proxy filter is on the "
          "client's listener, and a key on every shard round-trips without MOVED/ASK "
          "(skipped for a lab with extra EnvoyFilters)"),
)

DOWN: tuple[Stage, ...] = (
    Stage(StageKey.STOP, "stop the lab's proxy, control plane and nodes"),
    Stage(StageKey.REMOVE, "remove the lab's files and lock"),
)


def stage(key: StageKey) -> Stage:
    return next(s for s in (*UP, *DOWN) if s.key == key)
