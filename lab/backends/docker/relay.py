"""The proxy client's way in: a relay run inside the client pod's network namespace.

`nsenter --net=/proc/<pid>/ns/net python -m lab.backends.docker.relay SOCKET HOST PORT PID`
listens on a 0600 Unix socket (a path in the lab dir: the file system is the host's) and,
for each connection, opens TCP to HOST:PORT from inside the pod, so the pod's iptables
capture sends it to the sidecar exactly like the application's own connections. It exits
when the pod's process PID exits (a pidfd, no polling), so removing the containers is
enough to end it even when the lab's state directory is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.state import Process

SOCKET = "proxy.sock"
REDIS_PORT = 6379


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(path: str, host: str, port: int, watch: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            print(f"relay: connect {host}:{port}: {exc}", file=sys.stderr, flush=True)
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    old = os.umask(0o177)  # the socket is created 0600
    try:
        server = await asyncio.start_unix_server(handle, path=path)
    finally:
        os.umask(old)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        pidfd = os.pidfd_open(watch)
    except ProcessLookupError:
        return
    loop.add_reader(pidfd, stop.set)
    print(f"relay: {path} -> {host}:{port}", flush=True)
    async with server:
        await stop.wait()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def start(pid: int, directory: Path, vip: str) -> Process:
    """The relay for the pod whose process is `pid`, listening on <directory>/proxy.sock."""
    from lab import procs
    from lab.errors import LabError
    from lab.state import Process

    from . import readiness

    socket_path = directory / SOCKET
    nsenter = shutil.which("nsenter")
    if not nsenter:
        raise LabError("nsenter not found (util-linux): it enters the client's namespace")
    argv = [nsenter, f"--net=/proc/{pid}/ns/net", "--", sys.executable, "-m",
            "lab.backends.docker.relay", str(socket_path), vip, str(REDIS_PORT), str(pid)]
    env_path = str(Path(__file__).resolve().parents[3])
    log = directory / "logs" / "relay.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, cwd=directory, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONPATH": env_path})
    relay = Process("relay", process.pid, str(socket_path),
                    started=procs.start_time(process.pid) or 0, argv=argv, cwd=str(directory),
                    log=str(log))

    @readiness.retry_until(15, 0.02)
    def listening() -> None:
        if not procs.running(process.pid):
            raise LabError(f"the relay exited: {log.read_text(errors='replace')[-300:]}")
        if not socket_path.is_socket():
            raise readiness.NotReady("no relay socket yet")

    try:
        listening()
    except readiness.NotReady:
        procs.stop(relay.pid, relay.expect)
        raise LabError("the relay did not start listening") from None
    return relay


def main(argv: list[str]) -> int:
    """The relay program itself (in the pod's network namespace)."""
    if len(argv) != 4:
        print("usage: python -m lab.backends.docker.relay SOCKET HOST PORT PID", file=sys.stderr)
        return 2
    asyncio.run(_serve(argv[0], argv[1], int(argv[2]), int(argv[3])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
