"""How tests reach a lab on Kubernetes: exec through the client pod, port-forwards to pods."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from lab import model, ports, procs
from lab.errors import LabError
from lab.state import LabState, Process
from lab.topology import Node

from . import proxyclient
from .layout import NAMESPACE, Layout, layout_of
from .runner import Runner, SubprocessRunner
from .tools import kubectl

MIRROR_NODE = "redis-mirror"
CLIENT_CONTAINER = "redis-client"
SIDECAR = "istio-proxy"
FORWARD_READY_TIMEOUT = 20.0

_LOG_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def _argv(args: Sequence[object], binary: str) -> list[str]:
    argv = [str(a) for a in args]
    argv[0] = binary
    return argv


class KubeAccess:
    """The Access of a kind/existing lab (see lab.backends.base.Access)."""

    def __init__(self, state: LabState, runner: Runner | None = None,
                 layout: Layout | None = None) -> None:
        self.state = state
        self.layout = layout or layout_of(state)
        self.runner = runner or SubprocessRunner(self.layout.kubeconfig)
        self._kubectl: str | None = None
        self._clients: list[redis.Redis] = []
        self._forwards: dict[str, tuple[int, Process]] = {}

    # -- helpers -------------------------------------------------------------------------

    @property
    def kubectl_path(self) -> str:
        if self._kubectl is None:
            self._kubectl = kubectl()
        return self._kubectl

    @property
    def client_pod(self) -> str:
        return str(self.state.extra["client_pod"])

    def _exec(self, pod: str, container: str, *command: str, stdin: bool = False) -> list[str]:
        return _argv(self.layout.exec_in(pod, container, *command, stdin=stdin),
                     self.kubectl_path)

    def pod_of(self, node: Node) -> str:
        if node.name == MIRROR_NODE:
            pod = self.state.mirror.get("pod")
            if not pod:
                raise LabError("this lab has no mirror (it was brought up with --no-mirror)")
            return str(pod)
        return node.name

    # -- Access --------------------------------------------------------------------------

    def proxy_argv(self) -> list[str]:
        service = model.CLIENT_SERVICE
        return self._exec(self.client_pod, CLIENT_CONTAINER,
                          *proxyclient.relay_command(service, model.REDIS_PORT), stdin=True)

    def proxy_client(self) -> redis.Redis:
        client = proxyclient.client(self.proxy_argv())
        self._clients.append(client)
        return client

    def monitor_argv(self, node: Node) -> list[str]:
        """`redis-cli monitor` streamed from the node's pod (the tutorial's way)."""
        container = MIRROR_NODE if node.name == MIRROR_NODE else "redis"
        return self._exec(self.pod_of(node), container, "redis-cli", "monitor")

    def address(self, node: Node) -> tuple[str, int]:
        pod = self.pod_of(node)
        if pod in self._forwards:
            port, process = self._forwards[pod]
            if procs.running(process.pid, process.expect):
                return ports.LOOPBACK, port
            del self._forwards[pod]
        port = self._start_forward(pod)
        return ports.LOOPBACK, port

    def _start_forward(self, pod: str) -> int:
        directory = self.layout.directory
        directory.mkdir(parents=True, exist_ok=True)
        with ports.allocation_lock(directory):
            port = ports.pick(1)[0]
            argv = _argv(self.layout.kubectl("-n", NAMESPACE, "port-forward", "--address",
                                             ports.LOOPBACK, f"pod/{pod}",
                                             f"{port}:{model.REDIS_PORT}"), self.kubectl_path)
            pid = procs.spawn(argv, directory / f"port-forward-{pod}.log", directory)
        process = Process(name=f"port-forward-{pod}", pid=pid, expect=f"pod/{pod}")
        self._forwards[pod] = (port, process)
        deadline = time.monotonic() + FORWARD_READY_TIMEOUT
        while time.monotonic() < deadline:
            if not procs.running(pid):
                log = directory / f"port-forward-{pod}.log"
                raise LabError(f"kubectl port-forward to {pod} exited: {_tail(log)}")
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex((ports.LOOPBACK, port)) == 0:
                    return port
            time.sleep(0.1)
        procs.stop(pid, process.expect)
        raise LabError(f"kubectl port-forward to {pod} not ready in {FORWARD_READY_TIMEOUT:.0f}s")

    @property
    def processes(self) -> list[Process]:
        return [process for _, process in self._forwards.values()]

    def admin_get(self, path: str) -> str:
        argv = self._exec(self.client_pod, SIDECAR, "pilot-agent", "request", "GET",
                          path.lstrip("/"))
        return self.runner.run(argv, timeout=60).stdout

    def logs(self) -> dict[str, str]:
        pods = [*self.state.extra.get("redis_pods", []), self.client_pod]
        if self.state.mirror.get("pod"):
            pods.append(str(self.state.mirror["pod"]))
        found: dict[str, str] = {}
        for pod in pods:
            argv = _argv(self.layout.kubectl("-n", NAMESPACE, "logs", pod, "--all-containers",
                                             "--prefix"), self.kubectl_path)
            result = self.runner.run(argv, check=False, timeout=60)
            found[_LOG_NAME.sub("_", pod)] = result.stdout + result.stderr
        return found

    def fault(self, node: Node, action: str) -> None:
        """Seam 3: not on Kubernetes yet (pod deletion and network policies would do it)."""
        raise LabError(f"fault {action!r} on {node.name}: not implemented on backend "
                       f"{self.state.backend} yet")

    def close(self) -> None:
        for client in self._clients:
            client.close()
            client.connection_pool.disconnect()
        self._clients.clear()
        for _, process in self._forwards.values():
            procs.stop(process.pid, process.expect)
        self._forwards.clear()


def _tail(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"
