"""How the test process reaches a local lab: TCP on loopback, Envoy's admin over its socket."""

from __future__ import annotations

import redis

from lab import acl, binaries
from lab.backends.base import DirectNodes
from lab.controlplane import istiod as cp_istiod
from lab.envoy.admin import Admin
from lab.state import LabState
from lab.topology import Node

from . import faults


class LocalAccess(DirectNodes):
    """Direct TCP to the proxy and the nodes; Envoy's admin over the lab's Unix socket."""

    def __init__(self, state: LabState) -> None:
        self.state = state
        self._credentials: acl.Credentials | None = None

    def proxy_client(self) -> redis.Redis:
        return redis.Redis(host=self.state.proxy.host, port=self.state.proxy.port,
                           socket_timeout=10, decode_responses=False,
                           protocol=2)  # Envoy speaks RESP2 only (no HELLO)

    def proxy_cli(self, *args: str) -> list[str]:
        return [binaries.redis_cli(), "-h", self.state.proxy.host, "-p",
                str(self.state.proxy.port), *args]

    def credentials(self) -> dict[str, str]:
        """The lab's admin user, for node clients (`Lab.client`)."""
        if self._credentials is None:
            self._credentials = acl.load(self.state.directory)
        return self._credentials.redis_kwargs()

    def admin_get(self, path: str) -> str:
        return Admin.of(self.state.admin, timeout=5.0).get(path)

    def logs(self) -> dict[str, str]:
        logs = {}
        for log in sorted((self.state.directory / "logs").glob("*.log")):
            logs[log.stem] = log.read_text(encoding="utf-8", errors="replace")[-200_000:]
        if self.state.control_plane.name == cp_istiod.NAME:
            logs.update(cp_istiod.diagnostics(self.state.control_plane,
                                              self.state.directory / "logs"))
        return logs

    def fault(self, node: Node, action: str) -> None:
        """Faults (lab/backends/local/faults.py)."""
        faults.fault(self.state, node, action, self.credentials())

    def close(self) -> None:
        pass
