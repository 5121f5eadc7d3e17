"""The local backend's files: redis.conf of a loopback node and of the mirror, Service VIPs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lab import node_tuning, ports
from lab.model import Service

LOOPBACK = ports.LOOPBACK
# The redis-cluster Service's "cluster IP" on the local backend. It names the sidecar
# listener (`127.0.10.1_6379`) as a real cluster IP would; the listener itself binds
# 127.0.0.1 on the proxy port.
SERVICE_VIPS_BASE = "127.0.10."

# redis.conf directives the local backend sets itself, whatever the ConfigMap says.
_LOCAL_DIRECTIVES = {"port", "bind", "dir", "cluster-config-file", "cluster-node-timeout",
                     "repl-diskless-sync-delay", "repl-ping-replica-period",
                     "daemonize", "logfile", "pidfile", "protected-mode", "user", "aclfile",
                     "requirepass", "masteruser", "masterauth", "enable-protected-configs",
                     "enable-debug-command", "enable-module-command", "rename-command"}


def local_vips(services: tuple[Service, ...]) -> dict[str, str]:
    routed = [s for s in services if not s.headless]
    return {s.name: f"{SERVICE_VIPS_BASE}{i + 1}" for i, s in enumerate(routed)}


def node_conf(manifest_conf: str, port: int, directory: Path,
              security: list[str] | None = None, host: str = LOOPBACK) -> str:
    """The ConfigMap's redis.conf with the directives a loopback node needs of its own."""
    kept = [line for line in manifest_conf.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
            and line.split()[0].lower() not in _LOCAL_DIRECTIVES]
    return "\n".join([
        *kept,
        f"port {port}",
        f"bind {host}",
        *([f"cluster-announce-ip {host}"] if host != LOOPBACK else []),
        "protected-mode yes",
        f"dir {directory}",
        "cluster-config-file nodes.conf",
        *node_tuning.conf_lines(),
        "save \"\"",
        # the process title Redis sets overwrites its environment, and with it the lab's label
        # (REDIS_MESH_LAB_ID) that `down` and `list` find a lab's processes by
        "set-proc-title no",
        *(security or []),
        "",
    ])


def mirror_conf(port: int, directory: Path, security: list[str] | None = None,
                host: str = LOOPBACK) -> str:
    return "\n".join([f"port {port}", f"bind {host}", "protected-mode yes",
                      f"dir {directory}", "save \"\"", "appendonly no", "set-proc-title no",
                      *(security or []), ""])


def redis_major(server: str) -> int:
    try:
        out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
        version = next(part for part in out.split() if part.startswith("v="))
        return int(version[2:].split(".")[0])
    except (OSError, subprocess.SubprocessError, StopIteration, ValueError):
        return 6


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
