"""Envoy's admin API over its Unix socket (the sidecar listens on no TCP port for it)."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


def admin_get(path: Path, url_path: str, method: str = "GET", timeout: float = 5.0) -> str:
    connection = _UnixConnection(path, timeout)
    try:
        connection.request(method, url_path)
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        if response.status >= 400:
            raise OSError(f"Envoy admin {method} {url_path}: HTTP {response.status}: {body[:200]}")
        return body
    finally:
        connection.close()
