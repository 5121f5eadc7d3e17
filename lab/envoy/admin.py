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
        return self.get(CLUSTERS_JSON)

    def server_version(self) -> str:
        """"1.40.0" out of "<sha>/1.40.0/Clean/RELEASE/BoringSSL"."""
        version = str(json.loads(self.get("/server_info")).get("version", ""))
        return version.split("/")[1] if "/" in version else version

    def hosts(self, cluster: str) -> dict[str, str]:
        """{"ip:port": health_flags} of a cluster, from /clusters."""
        return parse_hosts(self.clusters(), cluster)


CLUSTERS_JSON = "/clusters?format=json"
# Envoy's health_status booleans, named as its text /clusters output names them.
_FAILURES = {
    "failed_active_health_check": "failed_active_hc",
    "failed_outlier_check": "failed_outlier_check",
    "failed_active_degraded_check": "degraded_active_hc",
    "pending_dynamic_removal": "pending_dynamic_removal",
    "pending_active_hc": "pending_active_hc",
    "excluded_via_immediate_hc_fail": "excluded_via_immediate_hc_fail",
    "active_hc_timeout": "active_hc_timeout",
}


def parse_hosts(clusters: str, cluster: str) -> dict[str, str]:
    """{"ip:port": "healthy" or "/flag/flag"} of one cluster, from `/clusters?format=json`.

    Envoy's plain-text `/clusters` is still accepted for callers that fetch it (kube's
    `pilot-agent request GET clusters`, docker); new callers should ask for the JSON.
    """
    if not clusters.lstrip().startswith("{"):
        return _parse_hosts_text(clusters, cluster)
    hosts: dict[str, str] = {}
    for status in json.loads(clusters).get("cluster_statuses", []):
        if status.get("name") != cluster:
            continue
        for host in status.get("host_statuses", []):
            address = host.get("address", {}).get("socket_address", {})
            health = host.get("health_status", {})
            flags = [text for field, text in _FAILURES.items() if health.get(field)]
            eds = health.get("eds_health_status", "HEALTHY")
            if eds not in ("HEALTHY", "UNKNOWN"):
                flags.append(f"eds_{str(eds).lower()}")
            key = f"{address.get('address')}:{address.get('port_value')}"
            hosts[key] = "/" + "/".join(flags) if flags else "healthy"
    return hosts


def _parse_hosts_text(clusters_text: str, cluster: str) -> dict[str, str]:
    hosts: dict[str, str] = {}
    prefix = f"{cluster}::"
    for line in clusters_text.splitlines():
        if not line.startswith(prefix):
            continue
        parts = line[len(prefix):].split("::")
        if len(parts) == 3 and parts[1] == "health_flags":
            hosts[parts[0]] = parts[2]
    return hosts
