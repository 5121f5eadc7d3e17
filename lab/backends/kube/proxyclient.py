"""A redis-py client whose connections are `kubectl exec -i` pipes out of the client pod.

Each connection runs a raw TCP relay inside the redis-client container (bash's /dev/tcp to
`redis-cluster:6379`), so every byte leaves through the pod's sidecar exactly as the
tutorial's `redis-cli -h redis-cluster` does, and redis-py does the RESP on this side.
"""

from __future__ import annotations

import contextlib
import inspect
import socket
import subprocess
from collections.abc import Sequence
from typing import Any

import redis
from redis.connection import AbstractConnection, Connection, ConnectionPool

# Inside the client container: connect fd 3 to the Service, copy both ways, end with stdin.
RELAY = 'exec 3<>"/dev/tcp/$0/$1" || exit 1; cat <&3 & cat >&3; kill $! 2>/dev/null'


def relay_command(host: str, port: int) -> list[str]:
    return ["bash", "-c", RELAY, host, str(port)]


class PipeConnection(Connection):
    """A redis-py Connection over a subprocess's stdin/stdout instead of a TCP socket."""

    def __init__(self, argv: Sequence[str] = (), **kwargs: Any) -> None:
        self.argv = list(argv)
        self.process: subprocess.Popen[bytes] | None = None
        super().__init__(**kwargs)

    def _connect(self) -> socket.socket:
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                self.argv, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(self.socket_timeout)
        return ours

    def _host_error(self) -> str:
        return f"pipe `{' '.join(self.argv[:3])} ...`"

    def disconnect(self, *args: Any, **kwargs: Any) -> None:
        super().disconnect(*args, **kwargs)
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=2)


# No CLIENT SETINFO on connect (Envoy's redis proxy does not know it): redis-py 6+ takes
# driver_info=None, older versions lib_name/lib_version=None.
_NO_SETINFO: dict[str, Any] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


def client(argv: Sequence[str], timeout: float = 10.0) -> redis.Redis:
    """A redis.Redis whose every connection is a fresh `argv` relay process."""
    pool = ConnectionPool(connection_class=PipeConnection, argv=list(argv),
                          socket_timeout=timeout, protocol=2,  # RESP2: no HELLO for Envoy
                          **_NO_SETINFO)
    return redis.Redis(connection_pool=pool)
