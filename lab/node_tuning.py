"""The Redis directives the local and docker backends set on every cluster node, whatever the
ConfigMap says: failover in seconds, since faults are part of the suites, and replicas that are
listed in CLUSTER SLOTS (so in Envoy's view) soon after they attach. The kind backend runs the
ConfigMap as the tutorial wrote it (a 15 s node timeout)."""

from __future__ import annotations

NODE_TIMEOUT_MS = 2000  # the ConfigMap's cluster-node-timeout is 15000
# Redis 7 syncs replicas diskless and first waits 5 s for more replicas to join the transfer:
# a new or re-attached replica would lag 5 s for nothing.
DISKLESS_SYNC_DELAY_S = 0
# Redis 7 leaves a replica out of CLUSTER SLOTS until its replication offset is non-zero; on
# an empty master only the master's replication PING moves it, every 10 s by default.
REPLICA_PING_PERIOD_S = 1


def directives() -> list[tuple[str, str]]:
    """(directive, value), in redis.conf's spelling."""
    return [("cluster-node-timeout", str(NODE_TIMEOUT_MS)),
            ("repl-diskless-sync-delay", str(DISKLESS_SYNC_DELAY_S)),
            ("repl-ping-replica-period", str(REPLICA_PING_PERIOD_S))]


def conf_lines() -> list[str]:
    """The directives as redis.conf lines."""
    return [f"{name} {value}" for name, value in directives()]


def arguments() -> list[str]:
    """The directives as redis-server arguments."""
    return [part for name, value in directives() for part in (f"--{name}", value)]
