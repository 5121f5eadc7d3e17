"""How the test process reaches a docker lab.

- The proxy: a Unix socket served by the relay inside the client pod's network namespace,
  so every connection is captured by iptables and handled by the sidecar, as the
  application's would be.
- Nodes and the mirror: directly at their pod IPs (the host is on the lab's bridge).
- Envoy's admin: its Unix socket in the lab dir.
- Faults act on the containers: kill, stop, start, pause, network disconnect.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from lab import acl, binaries
from lab.backends.base import DirectNodes
from lab.envoy import admin
from lab.errors import LabError
from lab.state import LabState
from lab.topology import Node

from . import engine

FAULTS = ("kill", "stop", "start", "freeze", "unfreeze", "isolate", "reconnect")
KILL_WAIT_S = 30  # the engine's kill only sends SIGKILL; the container exits a moment later


class DockerAccess(DirectNodes):
    def __init__(self, state: LabState) -> None:
        self.state = state
        self._engine = engine.Engine()
        self._credentials: acl.Credentials | None = None

    @property
    def docker(self) -> Any:
        return self._engine.client

    @property
    def relay_socket(self) -> Path:
        return self.state.directory / self.state.docker_facts().relay_socket

    @property
    def admin_socket(self) -> Path:
        return self.state.directory / self.state.docker_facts().admin_socket

    def credentials(self) -> dict[str, str]:
        """The lab's admin user: node clients of the `Lab` handle authenticate."""
        if self._credentials is None:
            self._credentials = acl.load(self.state.directory)
        return self._credentials.redis_kwargs()

    def proxy_client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.relay_socket), socket_timeout=10,
                           decode_responses=False, protocol=2)  # Envoy speaks RESP2 only

    def proxy_cli(self, *args: str) -> list[str]:
        return [binaries.redis_cli(), "-s", str(self.relay_socket), *args]

    def admin_get(self, path: str) -> str:
        return admin.admin_get(self.admin_socket, path)

    def containers(self) -> dict[str, str]:
        """{pod name: container name}."""
        return dict(self.state.docker_facts().containers)

    def logs(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for pod, name in self.containers().items():
            try:
                container = self.docker.containers.get(name)
                found[pod] = container.logs(tail=2000).decode(errors="replace")
                found[f"{pod}.inspect.json"] = json.dumps(container.attrs, indent=2)
            except Exception as exc:
                found[pod] = f"unavailable: {exc}"
        for log in sorted((self.state.directory / "logs").glob("*.log")):
            found[log.stem] = log.read_text(encoding="utf-8", errors="replace")[-200_000:]
        return found

    # ---- faults -------------------------------------------------------------------------
    def _container(self, node: Node) -> Any:
        name = self.containers().get(node.name)
        if name is None:
            raise LabError(f"no container for {node.name} in lab {self.state.name!r}")
        return self.docker.containers.get(name)

    def fault(self, node: Node, action: str) -> None:
        if action not in FAULTS:
            raise LabError(f"unknown fault {action!r}; valid: {', '.join(FAULTS)}")
        container = self._container(node)
        if action == "kill":  # returns once the node is dead, as on the local backend
            container.kill()
            container.wait(timeout=KILL_WAIT_S)
        elif action == "stop":
            container.stop(timeout=10)
        elif action == "start":
            container.start()
        elif action == "freeze":
            container.pause()
        elif action == "unfreeze":
            if container.status == "paused":  # a killed-then-started node is not paused
                container.unpause()
        else:
            self._network_fault(container, node, action)

    def _network_fault(self, container: Any, node: Node, action: str) -> None:
        network_name = self.state.docker_facts().network
        network = self.docker.networks.get(network_name)
        attached = network_name in (container.attrs.get("NetworkSettings") or {}).get(
            "Networks", {})
        if action == "isolate":
            if attached:
                network.disconnect(container)
            return
        if not attached:  # back with the same IP and DNS names
            aliases = list(self.state.docker_facts().aliases.get(node.name, []))
            network.connect(container, ipv4_address=node.host, aliases=aliases)

    def close(self) -> None:
        self._engine.close()
