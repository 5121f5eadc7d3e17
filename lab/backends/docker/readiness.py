"""Waiting for a docker lab's parts, each on an observable condition with a deadline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from lab import acl, model
from lab.backends.converge import NotReady, retry_until
from lab.envoy import admin
from lab.envoy.admin import server_version
from lab.errors import LabError


def node_client(ip: str, credentials: acl.Credentials, timeout: float = 2) -> redis.Redis:
    """The lab's tooling talks to nodes as the lab's admin user."""
    return redis.Redis(ip, model.REDIS_PORT, socket_timeout=timeout, protocol=2,
                       username=credentials.username, password=credentials.password)





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
