"""A small client of Envoy's admin API (loopback only)."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class Admin:
    host: str
    port: int
    timeout: float = 2.0

    def get(self, path: str) -> str:
        url = f"http://{self.host}:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=self.timeout) as response:
            return response.read().decode()

    def clusters(self) -> str:
        return self.get("/clusters")

    def server_version(self) -> str:
        """"1.40.0" out of "<sha>/1.40.0/Clean/RELEASE/BoringSSL"."""
        version = str(json.loads(self.get("/server_info")).get("version", ""))
        return version.split("/")[1] if "/" in version else version

    def hosts(self, cluster: str) -> dict[str, str]:
        """{"ip:port": health_flags} of a cluster, from /clusters."""
        return parse_hosts(self.clusters(), cluster)


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
