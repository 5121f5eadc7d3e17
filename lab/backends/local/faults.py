"""Faults on the local backend: signals to the lab's own redis-server processes.

kill = SIGKILL, stop = SIGTERM (redis-server shuts down cleanly), start = the recorded
command line again (its directory keeps the append-only file and nodes.conf, so it rejoins
with its data), freeze / unfreeze = SIGSTOP / SIGCONT. Signals go through the journal's
Process records (pid + start time), never to a pid that is not the lab's.
isolate / reconnect cannot be done on loopback: every node shares one network namespace.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any

import redis
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_delay, wait_fixed

from lab import procs
from lab.backends.base import FAULTS
from lab.errors import LabError
from lab.state import LabState, Process
from lab.topology import Node


class _Waiting(Exception):
    pass


def _until(seconds: float) -> Any:
    return retry(stop=stop_after_delay(seconds), wait=wait_fixed(0.05),
                 retry=retry_if_exception_type((_Waiting, redis.RedisError, OSError)),
                 reraise=True)


def _process(state: LabState, node: Node) -> Process:
    for process in state.processes:
        if process.name == node.name:
            return process
    raise LabError(f"lab {state.name!r} has no process {node.name!r}")


def _signal(process: Process, sig: signal.Signals) -> None:
    if not procs.alive(process):
        raise LabError(f"{process.name} is not running (pid {process.pid})")
    procs.send(process, sig)


def _wait_gone(process: Process, seconds: float = 10) -> None:
    @_until(seconds)
    def gone() -> None:
        if procs.alive(process):
            raise _Waiting(f"{process.name} (pid {process.pid}) is still running")

    gone()


def _wait_ping(node: Node, process: Process, credentials: dict[str, str],
               seconds: float = 20) -> None:
    @_until(seconds)
    def answers() -> None:
        if not procs.alive(process):
            raise LabError(f"{node.name} exited right after start")
        with redis.Redis(node.host, node.port, socket_timeout=1,
                         username=credentials.get("username"),
                         password=credentials.get("password")) as client:
            client.ping()

    try:
        answers()
    except (_Waiting, RetryError, redis.RedisError, OSError) as exc:
        raise LabError(f"{node.name} did not answer PING after start: {exc}") from None


def _start(state: LabState, node: Node, process: Process, credentials: dict[str, str]) -> None:
    if procs.alive(process):
        procs.send(process, signal.SIGCONT)  # a frozen node: start means running
        return
    if not process.argv:
        raise LabError(f"{node.name}: the journal has no command line to start it again")
    fresh = procs.relaunch(process, str(state.directory))
    state.processes = [fresh if p is process else p for p in state.processes]
    state.save()
    _wait_ping(node, fresh, credentials)


def fault(state: LabState, node: Node, action: str, credentials: dict[str, str]) -> None:
    if action not in FAULTS:
        raise LabError(f"unknown fault {action!r}; valid: {', '.join(FAULTS)}")
    if action in ("isolate", "reconnect"):
        raise LabError(f"fault {action!r}: the local backend runs every node on loopback in "
                       "one network namespace, so it cannot cut one off (use --backend docker)")
    process = _process(state, node)
    if action == "kill":
        _signal(process, signal.SIGKILL)
        _wait_gone(process)
    elif action == "stop":
        if not procs.alive(process):
            raise LabError(f"{node.name} is not running (pid {process.pid})")
        with contextlib.suppress(ProcessLookupError):
            procs.send(process, signal.SIGCONT)  # a frozen process cannot handle SIGTERM
        procs.terminate(process, grace=10)
        _wait_gone(process)
    elif action == "start":
        _start(state, node, process, credentials)
    elif action == "freeze":
        _signal(process, signal.SIGSTOP)
    elif action == "unfreeze":
        _signal(process, signal.SIGCONT)
