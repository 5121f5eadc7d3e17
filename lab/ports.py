"""Loopback ports: free ones for the lab, held until used, and a clear error for a taken one.

A chosen port is held by a bound socket (no SO_REUSEADDR, never listening) from the moment
it is chosen until just before the process that needs it starts; Envoy's listeners are
built without SO_REUSEPORT, so two processes can never share a port: the loser of a race
fails to bind, cleanly, and the backend retries with another port (or, for a port the
user asked for, fails in one line).
"""

from __future__ import annotations

import contextlib
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
IN_USE = "Address already in use"


def _bind(port: int, host: str = LOOPBACK) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        return None
    return sock


def is_free(port: int, host: str = LOOPBACK) -> bool:
    sock = _bind(port, host)
    if sock is None:
        return False
    sock.close()
    return True


def require_free(port: int, what: str) -> int:
    if not 0 < port < 65536:
        raise LabError(f"{what} {port} is not a valid port")
    if not is_free(port):
        raise LabError(f"{what} {port} is already in use on {LOOPBACK}")
    return port


class Holds:
    """Bound sockets keeping chosen ports from anyone else until `release(port)`."""

    def __init__(self) -> None:
        self._socks: dict[int, socket.socket] = {}

    def take(self, port: int) -> bool:
        if port in self._socks:
            return True
        sock = _bind(port)
        if sock is None:
            return False
        self._socks[port] = sock
        return True

    def release(self, *ports: int) -> None:
        for port in ports:
            sock = self._socks.pop(port, None)
            if sock is not None:
                sock.close()

    def release_all(self) -> None:
        self.release(*list(self._socks))

    def __contains__(self, port: int) -> bool:
        return port in self._socks


def pick(count: int, exclude: Iterable[int] = (), cluster_bus: bool = False, *,
         low: int = 20000, high: int = 29999, holds: Holds | None = None) -> list[int]:
    """`count` free ports in [low, high]; with cluster_bus, port + 10000 is free too.

    With `holds`, every chosen port (and its bus port) is held by a bound socket.
    """
    taken = set(exclude)
    candidates = list(range(low, high + 1))
    random.shuffle(candidates)
    chosen: list[int] = []
    for port in candidates:
        if port in taken or (cluster_bus and port + CLUSTER_BUS_OFFSET in taken):
            continue
        wanted = [port, port + CLUSTER_BUS_OFFSET] if cluster_bus else [port]
        if holds is not None:
            got = [p for p in wanted if holds.take(p)]
            if len(got) != len(wanted):
                holds.release(*got)
                continue
        elif not all(is_free(p) for p in wanted):
            continue
        chosen.append(port)
        taken.update(wanted)
        if len(chosen) == count:
            return chosen
    raise LabError(f"could not find {count} free loopback ports in {low}-{high}")


@contextmanager
def allocation_lock(directory: Path) -> Iterator[None]:
    """Serialise port allocation between labs started at once (pytest-xdist workers)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)  # lock the directory itself: no lock file left over
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
