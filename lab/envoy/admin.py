"""A small client of Envoy's admin API, over the lab's private Unix socket (or loopback TCP).

The local lab's Envoy serves its admin API on `<lab dir>/envoy-admin.sock` (mode 0600, in
a 0700 directory): only the lab's owner can reach it. A socket path longer than the
kernel's limit (108 bytes) is reached through /proc/self/fd/<dir fd>/<name>.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lab.errors import LabError

if TYPE_CHECKING:
    from lab.state import AdminEndpoint

_SUN_PATH_MAX = 107


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            if len(os.fsencode(self._path)) <= _SUN_PATH_MAX:
                sock.connect(self._path)
            else:
                directory, name = os.path.split(self._path)
                dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    sock.connect(f"/proc/self/fd/{dir_fd}/{name}")
                finally:
                    os.close(dir_fd)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class AdminError(OSError):
    """The admin API answered with an error status."""


@dataclass(frozen=True)
class Admin:
    host: str = ""
    port: int = 0
    timeout: float = 2.0
    socket_path: str = ""

    def _connection(self) -> http.client.HTTPConnection:
        if self.socket_path:
            return _UnixConnection(self.socket_path, self.timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(self, method: str, path: str) -> str:
        connection = self._connection()
        try:
            connection.request(method, path)
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
            if response.status >= 400:
                raise AdminError(f"Envoy admin {method} {path}: HTTP {response.status}: "
                                 f"{body[:200]}")
            return body
        finally:
            connection.close()

    def get(self, path: str) -> str:
        return self.request("GET", path)

    def clusters(self) -> str:
        return self.get(CLUSTERS_JSON)

    def server_version(self) -> str:
        return server_version(self.get("/server_info"))

    def hosts(self, cluster: str) -> dict[str, str]:
        """{"ip:port": health_flags} of a cluster, from /clusters."""
        return parse_hosts(self.clusters(), cluster)

    @classmethod
    def of(cls, admin: AdminEndpoint, timeout: float = 2.0) -> Admin:
        """From a lab state's `admin` (a unix socket: local and docker)."""
        if not admin.socket:
            raise LabError(f"Envoy's admin is not a socket here: {admin.via or admin}")
        return cls(socket_path=admin.socket, timeout=timeout)


def admin_get(socket_path: str | os.PathLike[str], path: str, method: str = "GET",
              timeout: float = 5.0) -> str:
    """One request to the admin API on a unix socket (the sidecar has no admin TCP port)."""
    return Admin(socket_path=os.fspath(socket_path), timeout=timeout).request(method, path)


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


def server_version(server_info: str) -> str:
    """"1.40.0" out of /server_info's "version": "<sha>/1.40.0/Clean/RELEASE/BoringSSL"."""
    version = str(json.loads(server_info).get("version", ""))
    return version.split("/")[1] if "/" in version else version


def parse_hosts(clusters: str, cluster: str) -> dict[str, str]:
    """{"ip:port": "healthy" or "/flag/flag"} of one cluster, from `/clusters?format=json`.

    Envoy's plain-text `/clusters` is still accepted (what the diagnostics bundles save);
    every readiness check and the Lab handle ask for the JSON.
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


WORKER_CONNECTIONS = "/stats?filter=%5Elistener%5C..*%5C.worker_%5Cd%2B%5C.downstream_cx_total%24"
_WORKER_STAT = re.compile(r"^listener\.(?P<listener>.+)\.worker_(?P<worker>\d+)"
                          r"\.downstream_cx_total: (?P<count>\d+)$", re.MULTILINE)


def parse_worker_connections(stats: str, port: int) -> dict[int, int]:
    """{worker: connections accepted so far} of the listener on `port`, from /stats text.

    Envoy keeps one downstream_cx_total per listener and worker thread
    (`listener.127.0.0.1_6379.worker_0.downstream_cx_total`); {} when no listener of that
    port has per-worker counters."""
    return {int(m["worker"]): int(m["count"]) for m in _WORKER_STAT.finditer(stats)
            if m["listener"].endswith(f"_{port}")}
