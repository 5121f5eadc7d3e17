"""A small client of Envoy's admin API (loopback only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Admin:
    host: str
    port: int
    timeout: float = 2.0

    def get(self, path: str) -> str:
        url = f"http://{self.host}:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=self.timeout) as response:
            return response.read().decode()

    def config_dump(self) -> dict[str, Any]:
        return json.loads(self.get("/config_dump"))

    def clusters(self) -> str:
        return self.get("/clusters")

    def stats(self, filter_regex: str = "") -> str:
        suffix = f"?filter={filter_regex}" if filter_regex else ""
        return self.get(f"/stats{suffix}")

    def server_version(self) -> str:
        info = json.loads(self.get("/server_info"))
        return str(info.get("version", "")).split("/")[1] if "/" in info.get("version", "") \
            else str(info.get("version", ""))

    def hosts(self, cluster: str) -> dict[str, str]:
        """{"ip:port": health_flags} of a cluster, from /clusters."""
        return parse_hosts(self.clusters(), cluster)

    def reachable(self) -> bool:
        try:
            self.get("/ready")
        except (urllib.error.URLError, OSError):
            return False
        return True


def parse_hosts(clusters_text: str, cluster: str) -> dict[str, str]:
    hosts: dict[str, str] = {}
    prefix = f"{cluster}::"
    for line in clusters_text.splitlines():
        if not line.startswith(prefix):
            continue
        parts = line[len(prefix):].split("::")
        if len(parts) == 3 and parts[1] == "health_flags":
            hosts[parts[0]] = parts[2]
    return hosts
