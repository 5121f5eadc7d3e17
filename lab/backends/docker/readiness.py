"""Waiting for a docker lab's parts, each on an observable condition with a deadline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from lab import acl, model
from lab.backends import converge
from lab.backends.converge import NotReady, retry_until
from lab.envoy import admin
from lab.envoy.admin import CLUSTERS_JSON, parse_hosts, server_version
from lab.errors import LabError
from lab.topology import Node, Topology


def node_client(ip: str, credentials: acl.Credentials, timeout: float = 2) -> redis.Redis:
    """The lab's tooling talks to nodes as the lab's admin user."""
    return redis.Redis(ip, model.REDIS_PORT, socket_timeout=timeout, protocol=2,
                       username=credentials.username, password=credentials.password)


def wait_ping(nodes: list[Node], credentials: acl.Credentials) -> None:
    for node in nodes:
        @retry_until(20)
        def ping(node: Node = node) -> None:
            with node_client(node.host, credentials, 1) as conn:
                conn.ping()
        try:
            ping()
        except (redis.RedisError, OSError) as exc:
            raise LabError(f"{node.name} ({node.host}) does not answer PING: {exc}") from None


def wait_cluster(nodes: list[Node], names_by_address: dict[str, str],
                 credentials: acl.Credentials) -> Topology:
    return converge.wait_converged(nodes, lambda n: node_client(n.host, credentials),
                                   names_by_address)


def wait_envoy(socket_path: Path, expected: int, client: Any, container_name: str) -> None:
    @retry_until(30, 0.05)
    def healthy() -> None:
        status = client.containers.get(container_name).status
        if status in ("exited", "dead"):
            logs = client.containers.get(container_name).logs(tail=5).decode(errors="replace")
            raise LabError(f"Envoy exited: {' | '.join(logs.strip().splitlines())}")
        hosts = parse_hosts(admin.admin_get(socket_path, CLUSTERS_JSON), model.PROXY_CLUSTER)
        ok = [h for h, flags in hosts.items() if flags == "healthy"]
        if len(ok) != expected:
            raise NotReady(f"{len(ok)}/{expected} hosts of {model.PROXY_CLUSTER} healthy")

    try:
        healthy()
    except (NotReady, OSError) as exc:
        raise LabError(f"Envoy did not become ready: {exc}") from None


def wait_admin(socket_path: Path, client: Any, container_name: str) -> None:
    """Envoy is up and its config is loaded (a mutant's proxy may well be broken)."""
    @retry_until(30, 0.05)
    def loaded() -> None:
        if client.containers.get(container_name).status in ("exited", "dead"):
            raise LabError("Envoy exited after reconfigure")
        if "LIVE" not in admin.admin_get(socket_path, "/server_info"):
            raise NotReady("Envoy is not LIVE yet")

    try:
        loaded()
    except (NotReady, OSError) as exc:
        raise LabError(f"Envoy did not come back: {exc}") from None


def redis_version(ip: str, credentials: acl.Credentials) -> str:
    with node_client(ip, credentials) as conn:
        return str(conn.info("server").get("redis_version", ""))


def admin_version(socket_path: Path) -> str:
    return server_version(admin.admin_get(socket_path, "/server_info"))
