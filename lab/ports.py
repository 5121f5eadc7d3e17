"""Loopback ports: free ones for the lab, and a clear error for a taken one."""

from __future__ import annotations

import fcntl
import os
import random
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.errors import LabError

LOOPBACK = "127.0.0.1"
CLUSTER_BUS_OFFSET = 10000  # redis-server listens on port + 10000 for the cluster bus


def is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free(port: int, what: str) -> int:
    if not 0 < port < 65536:
        raise LabError(f"{what} {port} is not a valid port")
    if not is_free(port):
        raise LabError(f"{what} {port} is already in use on {LOOPBACK}")
    return port


def pick(count: int, exclude: Iterable[int] = (), cluster_bus: bool = False,
         low: int = 20000, high: int = 29999) -> list[int]:
    """`count` free ports in [low, high]; with cluster_bus, port + 10000 is free too."""
    taken = set(exclude)
    candidates = list(range(low, high + 1))
    random.shuffle(candidates)
    chosen: list[int] = []
    for port in candidates:
        if port in taken or (cluster_bus and port + CLUSTER_BUS_OFFSET in taken):
            continue
        if is_free(port) and (not cluster_bus or is_free(port + CLUSTER_BUS_OFFSET)):
            chosen.append(port)
            taken.update({port, port + CLUSTER_BUS_OFFSET})
            if len(chosen) == count:
                return chosen
    raise LabError(f"could not find {count} free loopback ports in {low}-{high}")


@contextmanager
def allocation_lock(directory: Path) -> Iterator[None]:
    """Serialise port allocation between labs started at once (pytest-xdist workers)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)  # lock the directory itself: no lock file left over
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
