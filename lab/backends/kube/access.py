"""How tests reach a lab on Kubernetes: exec through the client pod, port-forwards to pods."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from lab import model, ports, procs
from lab.errors import LabError
from lab.state import LabState, Process
from lab.topology import Node

from . import proxyclient, readiness
from .layout import NAMESPACE, Layout, layout_of
from .runner import Runner, SubprocessRunner
from .tools import kubectl

MIRROR_NODE = "redis-mirror"
CLIENT_CONTAINER = "redis-client"
FORWARD_READY_TIMEOUT = 20.0
# a killed container is restarted by kubelet, after a back-off that doubles from 10 s when it
# is killed again soon (CrashLoopBackOff)
RESTART_TIMEOUT = 90.0
# fault -> `ctr tasks` arguments (see KubeAccess.fault)
_CTR: dict[str, tuple[str, ...]] = {
    "kill": ("kill", "--signal", "SIGKILL"), "stop": ("pause",), "start": ("resume",),
    "freeze": ("pause",), "unfreeze": ("resume",)}

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
        self.runner = runner or SubprocessRunner(self.layout.kubeconfig,
                                                    cache_dir=self.layout.cache_dir)
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
        return self.state.kube_facts().client_pod

    def _exec(self, pod: str, container: str, *command: str, stdin: bool = False) -> list[str]:
        return _argv(self.layout.exec_in(pod, container, *command, stdin=stdin),
                     self.kubectl_path)

    def pod_of(self, node: Node) -> str:
        if node.name == MIRROR_NODE:
            pod = self.state.mirror.pod
            if not pod:
                raise LabError("this lab has no mirror (it was brought up with --no-mirror)")
            return pod
        return node.name

    # -- Access --------------------------------------------------------------------------

    def proxy_argv(self) -> list[str]:
        service = model.CLIENT_SERVICE
        return self._exec(self.client_pod, CLIENT_CONTAINER,
                          *proxyclient.relay_command(service, model.REDIS_PORT), stdin=True)

    def proxy_cli(self, *args: str) -> list[str]:
        """`kubectl exec redis-client -- redis-cli -h redis-cluster ...`: the tutorial's."""
        return self._exec(self.client_pod, CLIENT_CONTAINER, "redis-cli", "-h",
                          model.CLIENT_SERVICE, "-p", str(model.REDIS_PORT), *args)

    def cluster_cli(self, *args: str) -> list[str]:
        """redis-cli in redis-cluster-0: the nodes announce pod IPs, which only the cluster's
        network reaches (a port-forward reaches one node, not the ones it names)."""
        return self._exec("redis-cluster-0", "redis", "redis-cli", *args)

    def cli_address(self, node: Node) -> str:
        return node.address  # the pod IP, as CLUSTER NODES has it

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
        argv = _argv(self.layout.admin_get(self.client_pod, path), self.kubectl_path)
        return readiness.admin_answer(self.runner.run(argv, timeout=60).stdout)

    def logs(self) -> dict[str, str]:
        pods = [*self.state.kube_facts().redis_pods, self.client_pod]
        if self.state.mirror.pod:
            pods.append(self.state.mirror.pod)
        found: dict[str, str] = {}
        for pod in pods:
            argv = _argv(self.layout.kubectl("-n", NAMESPACE, "logs", pod, "--all-containers",
                                             "--prefix"), self.kubectl_path)
            result = self.runner.run(argv, check=False, timeout=60)
            found[_LOG_NAME.sub("_", pod)] = result.stdout + result.stderr
        return found

    def fault(self, node: Node, action: str) -> None:
        """Faults of a kind lab, done by containerd in the node (`ctr -n k8s.io tasks ...` on
        the pod's redis container). Kubernetes restarts a container that exits, so `stop`
        freezes it (pause) and `start` thaws it: to the cluster and the proxy a stopped node
        is one that no longer answers, as a stopped process is. `kill` sends SIGKILL; kubelet
        then restarts the container, so a `start` after it resumes nothing and waits for the
        restarted container to answer."""
        if action in ("isolate", "reconnect"):
            raise LabError(f"fault {action!r}: not available on backend {self.state.backend}")
        if self.layout.cluster is None:
            raise LabError(f"fault {action!r} on {node.name}: backend existing does not "
                           "reach its nodes' container runtime (use --backend kind)")
        if action not in _CTR:
            raise LabError(f"unknown fault {action!r}; valid: {', '.join(_CTR)}")
        pod = self.pod_of(node)
        container = MIRROR_NODE if node.name == MIRROR_NODE else "redis"
        node_container = f"{self.layout.cluster}-control-plane"
        found = self.runner.run(["docker", "exec", node_container, "crictl", "ps", "-q",
                                 "--name", f"^{container}$", "--label",
                                 f"io.kubernetes.pod.name={pod}", "--label",
                                 f"io.kubernetes.pod.namespace={NAMESPACE}"], timeout=30)
        ids = found.stdout.split()
        if action in ("start", "unfreeze"):
            # a paused container is resumed; a killed one kubelet restarts by itself (there
            # may be none running yet): either way, done when the node answers
            if len(ids) == 1 and self._paused(node_container, ids[0]):
                self.runner.run(["docker", "exec", node_container, "ctr", "-n", "k8s.io",
                                 "tasks", *_CTR[action], ids[0]], timeout=30)
            self._wait_ping(pod, container, RESTART_TIMEOUT)
            return
        if len(ids) != 1:
            raise LabError(f"{pod}: {len(ids)} running {container} containers, not 1")
        self.runner.run(["docker", "exec", node_container, "ctr", "-n", "k8s.io", "tasks",
                         *_CTR[action], ids[0]], timeout=30)

    def _paused(self, node_container: str, container_id: str) -> bool:
        listed = self.runner.run(["docker", "exec", node_container, "ctr", "-n", "k8s.io",
                                  "tasks", "ls"], timeout=30)
        for line in listed.stdout.splitlines():  # TASK PID STATUS
            fields = line.split()
            if fields and fields[0] == container_id:
                return fields[-1] == "PAUSED"
        return False

    def _wait_ping(self, pod: str, container: str, timeout: float) -> None:
        argv = self._exec(pod, container, "redis-cli", "ping")

        @retry(stop=stop_after_delay(timeout), wait=wait_fixed(0.2),
               retry=retry_if_exception_type(LabError), reraise=True)
        def answers() -> None:
            result = self.runner.run(argv, check=False, timeout=30)
            if result.stdout.strip() != "PONG":
                raise LabError(f"{pod} does not answer PING after start: "
                               f"{(result.stdout + result.stderr).strip()[-200:]}")

        answers()

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
