"""The embedded backend: six redis-server processes, a mirror and Envoy, all on loopback.

Everything is derived from the manifests: redis.conf from the ConfigMap, node names from
the StatefulSet, Envoy's configuration from the Services (sidecar baseline) and the
EnvoyFilters. The cluster is formed by the real `redis-cli --cluster create`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from lab import acl, binaries, locks, model, node_tuning, paths, ports, procs, settings
from lab.backends import converge, local_envoy, local_faults
from lab.backends.base import Access, UpOptions
from lab.controlplane import addresses as cp_addresses
from lab.controlplane import istiod as cp_istiod
from lab.envoy import bootstrap, proof, sidecar
from lab.envoy.admin import Admin
from lab.errors import LabError
from lab.model import LabSpec, Service
from lab.progress import Progress
from lab.state import (
    AdminEndpoint,
    CorruptState,
    LabState,
    LocalFacts,
    LocalPorts,
    MirrorEndpoint,
    Process,
    ProxyEndpoint,
    all_states,
)
from lab.topology import Node, Topology

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
ADMIN_SOCKET = "envoy-admin.sock"
PORT_ATTEMPTS = 4




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


@dataclass
class _Plan:
    """Ports and names for one local lab."""

    nodes: list[Node]
    mirror: Node
    proxy_port: int
    names_by_address: dict[str, str] = field(default_factory=dict)
    proxy_host: str = LOOPBACK


class LocalAccess:
    """Direct TCP to the proxy and the nodes; Envoy's admin over the lab's Unix socket."""

    def __init__(self, state: LabState) -> None:
        self.state = state
        self._credentials: acl.Credentials | None = None

    def proxy_client(self) -> redis.Redis:
        return redis.Redis(host=self.state.proxy.host, port=self.state.proxy.port,
                           socket_timeout=10, decode_responses=False,
                           protocol=2)  # Envoy speaks RESP2 only (no HELLO)

    def proxy_cli(self, *args: str) -> list[str]:
        return [binaries.redis_cli(), "-h", self.state.proxy.host, "-p",
                str(self.state.proxy.port), *args]

    def address(self, node: Node) -> tuple[str, int]:
        return node.host, node.port

    def cluster_cli(self, *args: str) -> list[str]:
        return [binaries.redis_cli(), *args]

    def cli_address(self, node: Node) -> str:
        return node.address

    def credentials(self) -> dict[str, str]:
        """The lab's admin user, for node clients (`Lab.client`)."""
        if self._credentials is None:
            self._credentials = acl.load(self.state.directory)
        return self._credentials.redis_kwargs()

    def admin_get(self, path: str) -> str:
        return Admin.of(self.state.admin, timeout=5.0).get(path)

    def logs(self) -> dict[str, str]:
        logs = {}
        for log in sorted((self.state.directory / "logs").glob("*.log")):
            logs[log.stem] = log.read_text(encoding="utf-8", errors="replace")[-200_000:]
        if self.state.control_plane.name == cp_istiod.NAME:
            logs.update(cp_istiod.diagnostics(self.state.control_plane,
                                              self.state.directory / "logs"))
        return logs

    def fault(self, node: Node, action: str) -> None:
        """Faults (lab/backends/local_faults.py)."""
        local_faults.fault(self.state, node, action, self.credentials())

    def close(self) -> None:
        pass


class _PortConflict(Exception):
    """A process lost a race for its port: retry with another one."""


def _node_client(node: Node, credentials: acl.Credentials, timeout: float = 2) -> redis.Redis:
    return redis.Redis(node.host, node.port, socket_timeout=timeout,
                       username=credentials.username, password=credentials.password)


def _redis_major(server: str) -> int:
    try:
        out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
        version = next(part for part in out.split() if part.startswith("v="))
        return int(version[2:].split(".")[0])
    except (OSError, subprocess.SubprocessError, StopIteration, ValueError):
        return 6


class LocalBackend:
    name = "local"
    variant_capacity: int | None = None

    # ---- plan ---------------------------------------------------------------------------
    def dry_run(self, options: UpOptions) -> str:
        spec = model.load_spec(SERVICE_VIPS_BASE + "1", options.read_policy, options.mirror)
        sts = spec.statefulset
        where = paths.home() / options.name
        lines = [
            f"lab {options.name!r} on backend local (loopback only), state in {where}",
            f"1. render {', '.join(m.relpath for m in spec.k8s + spec.envoyfilters)}",
            f"2. start {sts.replicas} redis-server nodes {sts.pod(0)}..{sts.pod(sts.replicas - 1)}"
            " with the ConfigMap's redis.conf and an ACL (default user: no CONFIG, DEBUG, "
            "SAVE, SHUTDOWN, MODULE...; admin user from admin.password), and redis-mirror",
            f"3. redis-cli --user {acl.ADMIN_USER} --cluster create <{sts.replicas} nodes> "
            "--cluster-replicas 1 --cluster-yes",
            "4. wait for cluster_state:ok and 3 shards with one replica each",
            "5. build the Istio-shaped sidecar baseline from the Services, apply "
            + ", ".join(m.relpath for m in spec.envoyfilters) + " with Istio's patch semantics",
            f"6. envoy --mode validate, then start Envoy (admin on {where / ADMIN_SOCKET}, "
            "mode 0600)",
            f"7. wait until /clusters shows all {sts.replicas} hosts of {model.PROXY_CLUSTER} "
            "healthy, "
            f"config_dump has {proof.REDIS_PROXY_FILTER} on the proxy listener, and a key on "
            "every shard round-trips through the proxy without MOVED/ASK",
        ]
        if options.control_plane == cp_istiod.NAME:
            lines[2:] = [line.replace(" on loopback", "") for line in lines[2:]]
            lines[5:7] = cp_istiod.plan_lines()
        return "\n".join(lines)

    # ---- up -----------------------------------------------------------------------------
    def up(self, options: UpOptions, progress: Progress) -> LabState:
        name = paths.check_name(options.name)
        if options.spare_pods and options.control_plane == cp_istiod.NAME:
            raise LabError("--spare-pods needs --control-plane builtin (istiod's inputs list "
                           "the StatefulSet's six pods)")
        paths.home(create=True)
        with procs.interruptible(), locks.lab_lock(name, "being brought up") as held:
            self._clear_previous(name, progress)
            directory = paths.lab_dir(name)
            journal = LabState.starting(name, self.name, options.read_policy, options.mirror)
            try:
                directory.mkdir(mode=0o700)
                (directory / "logs").mkdir(mode=0o700)
                journal.save()  # before the first process starts
                return self._up(options, progress, journal)
            except BaseException:
                self._remove(name, journal)
                held.remove = True
                raise

    def _clear_previous(self, name: str, progress: Progress) -> None:
        """What an earlier run of this name left: refuse if it is up, else clean it."""
        directory = paths.lab_dir(name)
        try:
            state = LabState.load(name)
        except CorruptState as exc:
            progress.say(f"{exc}: removing what it left")
            self._remove(name, None)
            return
        label_left = procs.labelled(str(directory))
        if state is not None:
            alive = [p for p in state.processes if procs.alive(p)]
            if state.phase == "ready" and alive:
                raise LabError(f"lab {name!r} is already up ({len(alive)}/"
                               f"{len(state.processes)} processes running; "
                               f"redis-mesh-lab status --name {name})")
            if state.phase != "ready":
                progress.say(f"lab {name!r}: an earlier `up` (pid {state.owner_pid}) was "
                             f"interrupted; removing the {len(alive) + len(label_left)} "
                             "processes and the files it left")
            self._remove(name, state)
        elif label_left or directory.exists():
            self._remove(name, None)

    def _journal(self, journal: LabState, process: Process) -> Process:
        journal.processes.append(process)
        journal.save()
        return process

    def _up(self, options: UpOptions, progress: Progress, journal: LabState) -> LabState:
        directory = journal.directory
        label = str(directory)
        server, cli, envoy = binaries.redis_server(), binaries.redis_cli(), binaries.envoy()
        mutant = tuple(options.envoyfilters)
        istiod = options.control_plane == cp_istiod.NAME
        block = cp_istiod.require_block(options.name, all_states()) if istiod else None
        with progress.step("render manifests into the lab model"):
            probe = model.load_spec(SERVICE_VIPS_BASE + "1", options.read_policy, options.mirror)
            vips = cp_istiod.vips(probe, block) if block else local_vips(probe.services)
            spec = self._load_spec(vips[model.CLIENT_SERVICE], options)
            proof.check_envoyfilters(spec.envoyfilters)
        sts = spec.statefulset
        credentials = acl.create(directory)
        security = acl.conf_lines(credentials, _redis_major(server))
        holds = ports.Holds()
        try:
            plan = self._start_redis(server, spec, options, progress, journal=journal,
                                     holds=holds, security=security, block=block)
            with progress.step("redis-cli --cluster create --cluster-replicas 1"):
                self._create_cluster(cli, plan.nodes[:sts.replicas], directory, credentials)
            with progress.step("wait for cluster_state:ok and 3 shards with a replica each"):
                topology = self._wait_cluster(plan.nodes[:sts.replicas], plan, credentials)
            admin_socket = directory / ADMIN_SOCKET
            config_path = self._config(progress, spec, vips, plan=plan, block=block,
                                       journal=journal, admin_socket=admin_socket)
            with progress.step("envoy --mode validate"):
                sidecar.validate(config_path, envoy)
            admin = Admin(socket_path=str(admin_socket), timeout=5.0)
            with progress.step(f"start Envoy, wait for {sts.replicas} healthy hosts"):
                self._start_envoy(envoy, spec, vips, plan=plan, admin_socket=admin_socket,
                                  label=label, journal=journal, holds=holds, options=options)
                self._wait_ready(admin, bool(mutant), sts.replicas, journal.processes[-1],
                                 directory)
        finally:
            holds.release_all()
        if block:
            self._check_istiod(progress, admin, spec, block=block, journal=journal,
                               mutant=bool(mutant))
        proof.prove_proxy(
            progress, envoyfilters=mutant, mirror=options.mirror,
            config_dump=lambda: admin.get("/config_dump"),
            listener=f"{vips[model.CLIENT_SERVICE]}_{model.REDIS_PORT}",
            client_factory=lambda: redis.Redis(plan.proxy_host, plan.proxy_port,
                                               socket_timeout=5, protocol=2),
            topology=topology, where=f"{plan.proxy_host}:{plan.proxy_port}")
        journal.read_policy = spec.read_policy
        journal.mirror_enabled = spec.mirror
        journal.proxy = ProxyEndpoint(host=plan.proxy_host, port=plan.proxy_port)
        journal.admin = AdminEndpoint(socket=str(admin_socket))
        journal.mirror = MirrorEndpoint(host=plan.mirror.host, port=plan.mirror.port)
        journal.shards = topology.to_list()
        journal.spares = [n.to_dict() for n in plan.nodes[sts.replicas:]]
        journal.envoy_version = admin.server_version()
        journal.redis_version = self._redis_version(plan, credentials)
        journal.local = dataclasses.replace(
            journal.local_facts(), names_by_address=plan.names_by_address, vips=vips,
            envoy_config=str(config_path))
        if mutant:
            journal.envoyfilters = [str(path) for path in mutant]
        journal.phase = "ready"
        journal.save()
        return journal

    def _start_redis(self, server: str, spec: LabSpec, options: UpOptions,
                     progress: Progress, *, journal: LabState, holds: ports.Holds,
                     security: list[str], block: cp_addresses.Block | None = None) -> _Plan:
        """Choose the ports (serialised with other labs of this registry), start the nodes."""
        with ports.allocation_lock(paths.home()):
            plan = self._allocate(spec, options, holds)
            if block:
                plan = self._on_block(plan, block, cp_istiod.vips(spec, block))
            journal.local = journal.local or LocalFacts()
            journal.local.ports = LocalPorts(nodes=[n.port for n in plan.nodes],
                                             mirror=plan.mirror.port, proxy=plan.proxy_port)
            journal.save()
            with progress.step(f"start {len(plan.nodes)} redis-server nodes and redis-mirror"):
                confs: dict[str, Any] = {n.name: functools.partial(
                    node_conf, spec.redis_conf, security=security, host=n.host)
                    for n in plan.nodes}
                confs[plan.mirror.name] = functools.partial(
                    mirror_conf, security=security, host=plan.mirror.host)
                started = self._start_nodes(server, [*plan.nodes, plan.mirror], confs,
                                            label=str(journal.directory), journal=journal,
                                            holds=holds, plan=plan)
        plan.nodes, plan.mirror = started[:-1], started[-1]
        plan.names_by_address = {n.address: n.name for n in plan.nodes}
        return plan

    @staticmethod
    def _load_spec(vip: str, options: UpOptions) -> LabSpec:
        extra = tuple(options.envoyfilters)
        if extra:
            return model.load_spec(vip, options.read_policy, options.mirror,
                                   extra_envoyfilters=extra)
        return model.load_spec(vip, options.read_policy, options.mirror)

    def _allocate(self, spec: LabSpec, options: UpOptions, holds: ports.Holds) -> _Plan:
        reserved: set[int] = set()
        for other in all_states():
            reserved.update((other.proxy.port, other.mirror.port))
            if other.local is not None:
                journaled = other.local.ports
                reserved.update(journaled.nodes)
                reserved.update(p + ports.CLUSTER_BUS_OFFSET for p in journaled.nodes)
                reserved.update((journaled.mirror, journaled.proxy))
            reserved.update(int(n.port) + off for n in other.topology.nodes
                            for off in (0, ports.CLUSTER_BUS_OFFSET))
        if options.proxy_port is not None:
            ports.require_free(options.proxy_port, "--proxy-port")
            if not holds.take(options.proxy_port):
                raise LabError(f"--proxy-port {options.proxy_port} is already in use on "
                               f"{LOOPBACK}")
            reserved.add(options.proxy_port)
        sts = spec.statefulset
        node_ports = ports.pick(sts.replicas + options.spare_pods, reserved, cluster_bus=True,
                                holds=holds)
        reserved.update(node_ports)
        reserved.update(p + ports.CLUSTER_BUS_OFFSET for p in node_ports)
        extra = ports.pick(2 if options.proxy_port is None else 1, reserved, holds=holds)
        proxy_port = options.proxy_port if options.proxy_port is not None else extra.pop()
        nodes = [Node(sts.pod(i), LOOPBACK, port) for i, port in enumerate(node_ports)]
        mirror = Node(model.MIRROR_SERVICE, LOOPBACK, extra[0])
        return _Plan(nodes=nodes, mirror=mirror, proxy_port=proxy_port,
                     names_by_address={n.address: n.name for n in nodes})

    @staticmethod
    def _on_block(plan: _Plan, block: cp_addresses.Block, vips: dict[str, str]) -> _Plan:
        """istiod mode: each node and the mirror on an address of its own at the Service
        port, the proxy on the redis-cluster VIP at 6379, where the client connects."""
        nodes = [Node(n.name, block.node(i), model.REDIS_PORT) for i, n in enumerate(plan.nodes)]
        return _Plan(nodes=nodes, mirror=Node(plan.mirror.name, block.mirror, model.REDIS_PORT),
                     proxy_port=model.REDIS_PORT, proxy_host=vips[model.CLIENT_SERVICE],
                     names_by_address={n.address: n.name for n in nodes})

    def _config(self, progress: Progress, spec: LabSpec, vips: dict[str, str], *, plan: _Plan,
                block: cp_addresses.Block | None, journal: LabState, admin_socket: Path) -> Path:
        """Envoy's bootstrap from the control plane: builtin (static) or istiod (ADS)."""
        if block is None:
            with progress.step("derive Envoy's config: sidecar baseline + EnvoyFilters"):
                return self._envoy_config(spec, vips, plan, journal.directory, admin_socket)
        with progress.step(f"start {cp_istiod.describe()} and the lab's DNS"):
            return self._istiod(spec, block, journal, admin_socket)

    @staticmethod
    def _check_istiod(progress: Progress, admin: Admin, spec: LabSpec, *,
                      block: cp_addresses.Block, journal: LabState, mutant: bool) -> None:
        """Every EnvoyFilter's effect is in Envoy (istiod ignores a patch silently)."""
        journal.control_plane = cp_istiod.facts(block)
        with progress.step("istiod's push holds what every EnvoyFilter asks for"):
            journal.control_plane.unmatched_envoyfilters = cp_istiod.check_config(
                admin, spec, mutant=mutant)

    def _istiod(self, spec: LabSpec, block: cp_addresses.Block, journal: LabState,
                admin_socket: Path) -> Path:
        """Start the lab's DNS and istiod (journaled like every process); Envoy's bootstrap."""
        def launch(name: str, argv: list[str], log: Path, cwd: Path, expect: str) -> Process:
            return procs.launch(name, argv, log, cwd, str(journal.directory), expect=expect,
                                record=lambda p: self._journal(journal, p))

        admin_path = str(admin_socket) if len(str(admin_socket)) < 100 else admin_socket.name
        boot = cp_istiod.start(spec, block, journal.directory, launch=launch, admin=admin_path)
        path = journal.directory / "envoy.json"
        sidecar.write(boot, path)
        path.chmod(0o600)
        return path

    def _start_nodes(self, server: str, targets: list[Node], confs: dict[str, Any], *,
                     label: str, journal: LabState, holds: ports.Holds,
                     plan: _Plan) -> list[Node]:
        """Start every redis-server; one that loses its port to a race gets another one."""
        directory = journal.directory
        pending = list(targets)
        result: dict[str, Node] = {}
        for _attempt in range(PORT_ATTEMPTS):
            launched: list[tuple[Node, Process, int]] = []
            for node in pending:
                holds.release(node.port, node.port + ports.CLUSTER_BUS_OFFSET)
                node_dir = directory / node.name
                node_dir.mkdir(mode=0o700, exist_ok=True)
                conf_path = node_dir / "redis.conf"
                _write_private(conf_path, confs[node.name](node.port, node_dir))
                log = directory / "logs" / f"{node.name}.log"
                offset = log.stat().st_size if log.exists() else 0
                process = procs.launch(node.name, [server, str(conf_path)], log, node_dir,
                                       label, expect=node.address,
                                       record=lambda p: self._journal(journal, p))
                launched.append((node, process, offset))
            lost: list[Node] = []
            for node, process, offset in launched:
                try:
                    self._wait_ping(node, process, directory, offset)
                    result[node.name] = node
                except _PortConflict:
                    lost.append(node)
                    journal.processes.remove(process)  # it exited: only the retry is recorded
                    journal.save()
            if not lost:
                return [result[n.name] for n in targets]
            taken = {n.port for n in result.values()} | {plan.proxy_port}
            taken |= {p + ports.CLUSTER_BUS_OFFSET for p in taken}
            fresh = ports.pick(len(lost), taken, cluster_bus=True, holds=holds)
            pending = [Node(n.name, n.host, port) for n, port in zip(lost, fresh, strict=True)]
        raise LabError(f"{pending[0].name}: its port was taken {PORT_ATTEMPTS} times in a row")

    @staticmethod
    def _log_tail(directory: Path, name: str, lines: int = 3, offset: int = 0) -> str:
        log = directory / "logs" / f"{name}.log"
        if not log.is_file():
            return ""
        with open(log, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
        tail = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return " | ".join(tail[-lines:])

    def _wait_ping(self, node: Node, process: Process, directory: Path, offset: int) -> None:
        @converge.retry_until(10)
        def ping() -> None:
            if not procs.alive(process):
                tail = self._log_tail(directory, node.name, 20, offset)
                if ports.IN_USE in tail:
                    raise _PortConflict(node.name)
                last = self._log_tail(directory, node.name, 3, offset)
                raise LabError(f"{node.name} exited: {last}")
            with redis.Redis(node.host, node.port, socket_timeout=1) as client:
                client.ping()
        try:
            ping()
        except (redis.RedisError, OSError, converge.NotReady) as exc:
            raise LabError(f"{node.name} did not answer PING: {exc}") from None

    @staticmethod
    def _create_cluster(cli: str, nodes: list[Node], directory: Path,
                        credentials: acl.Credentials) -> None:
        argv = [cli, *credentials.cli_args(), "--cluster", "create",
                *[n.address for n in nodes], "--cluster-replicas", "1", "--cluster-yes"]
        timeout = settings.CLUSTER_CREATE_TIMEOUT.seconds()
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                    check=False, env={**os.environ, **credentials.cli_env()})
        except subprocess.TimeoutExpired:
            raise LabError(f"redis-cli --cluster create did not finish in {timeout:g}s") from None
        (directory / "logs" / "cluster-create.log").write_text(
            " ".join(argv) + "\n" + result.stdout + result.stderr, encoding="utf-8")
        if result.returncode != 0:
            reason = (result.stderr or result.stdout).strip().splitlines()
            raise LabError(f"redis-cli --cluster create failed: {reason[-1] if reason else ''}")

    @staticmethod
    def _wait_cluster(members: list[Node], plan: _Plan,
                      credentials: acl.Credentials) -> Topology:
        return converge.wait_converged(members, lambda n: _node_client(n, credentials),
                                       plan.names_by_address)

    @staticmethod
    def _envoy_config(spec: LabSpec, vips: dict[str, str], plan: _Plan, directory: Path,
                      admin_socket: Path) -> Path:
        def endpoints(service: Service, port: int) -> list[tuple[str, int]]:
            if service.name == model.MIRROR_SERVICE:
                return [(plan.mirror.host, plan.mirror.port)]
            offset = ports.CLUSTER_BUS_OFFSET if port != model.REDIS_PORT else 0
            return [(n.host, n.port + offset) for n in plan.nodes]

        def bind(service: Service, port: int) -> tuple[str, int]:
            if service.name == model.CLIENT_SERVICE and port == model.REDIS_PORT:
                return LOOPBACK, plan.proxy_port
            return LOOPBACK, 0  # Istio has a listener for every Service port; unused here

        def resolve(host: str, port: int) -> tuple[str, int] | None:
            ordinal = model.pod_ordinal(host, spec.statefulset)
            if ordinal is not None and port == model.REDIS_PORT:
                node = plan.nodes[ordinal]
                return node.host, node.port
            for service in spec.services:
                if host == service.fqdn and service.name == model.MIRROR_SERVICE:
                    return plan.mirror.host, plan.mirror.port
            return None

        config = sidecar.patched_config(spec, vips, endpoints, bind)
        # Envoy binds relative to its working directory (the lab's): a short path always
        admin_path = str(admin_socket) if len(str(admin_socket)) < 100 else admin_socket.name
        boot = bootstrap.build(config, admin_path, f"sidecar~{LOOPBACK}~"
                               f"redis-client.redis~redis.svc.cluster.local", resolve)
        path = directory / "envoy.json"
        sidecar.write(boot, path)
        path.chmod(0o600)
        return path

    def _start_envoy(self, envoy: str, spec: LabSpec, vips: dict[str, str], *, plan: _Plan,
                     admin_socket: Path, label: str, journal: LabState,
                     holds: ports.Holds, options: UpOptions) -> None:
        """Start Envoy; if it loses a chosen proxy port to a race, choose another one."""
        directory = journal.directory
        log = directory / "logs" / "envoy.log"
        for _attempt in range(PORT_ATTEMPTS):
            config_path = directory / "envoy.json"
            argv = [envoy, "-c", str(config_path), "--disable-hot-restart", "-l", "warning",
                    "--log-path", str(log)]
            if options.envoy_concurrency:
                argv += ["--concurrency", str(options.envoy_concurrency)]
            offset = log.stat().st_size if log.exists() else 0
            holds.release(plan.proxy_port)
            process = procs.launch("envoy", argv, log, directory, label,
                                   record=lambda p: self._journal(journal, p))
            if not self._lost_port(process, log, offset, Admin(socket_path=str(admin_socket))):
                return
            journal.processes.remove(process)
            journal.save()
            if options.proxy_port is not None:
                raise LabError(f"--proxy-port {options.proxy_port} is already in use on "
                               f"{LOOPBACK}")
            admin_socket.unlink(missing_ok=True)
            taken = {n.port for n in plan.nodes} | {plan.mirror.port}
            plan.proxy_port = ports.pick(1, taken, holds=holds)[0]
            self._envoy_config(spec, vips, plan, directory, admin_socket)
        raise LabError(f"Envoy's proxy port was taken {PORT_ATTEMPTS} times in a row")

    @staticmethod
    def _lost_port(process: Process, log: Path, offset: int, admin: Admin) -> bool:
        """Wait until Envoy serves its admin API (True if it exited for a port in use)."""
        @converge.retry_until(30, 0.05)
        def started() -> bool:
            if not procs.alive(process):
                with open(log, "rb") as handle:
                    handle.seek(offset)
                    text = handle.read().decode(errors="replace")
                if ports.IN_USE in text:
                    return True
                lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
                raise LabError(f"envoy exited: {' | '.join(lines[-3:])}")
            admin.get("/ready")
            return False

        try:
            return bool(started())
        except (redis.RedisError, OSError) as exc:
            raise LabError(f"Envoy's admin API did not answer: {exc}") from None

    def _wait_ready(self, admin: Admin, mutant: bool, expected: int, process: Process,
                    directory: Path) -> None:
        """A mutant lab is ready once Envoy is LIVE: the suite judges its proxy, not `up`.
        Any other also needs every Redis node as a healthy host. LIVE comes first: Envoy
        takes the clusters before the listeners, and fed by istiod it is LIVE only once its
        first listeners have arrived (the hosts alone do not say so)."""
        local_envoy.wait_live(admin, process, lambda: self._log_tail(directory, "envoy"))
        if not mutant:
            self._wait_envoy(admin, expected, process, directory)

    def reconfigure(self, name: str, envoyfilters: Sequence[Path | str],
                    progress: Progress) -> LabState:
        """Swap the extra EnvoyFilters of a running lab; restart only Envoy."""
        state = LabState.load(paths.check_name(name))
        if state is None or state.backend != self.name:
            raise LabError(f"lab {name!r} is not up on backend local")
        files = [str(Path(f).resolve()) for f in envoyfilters]
        vips = dict(state.local_facts().vips)
        admin_socket = Path(state.admin.socket)
        with progress.step("derive Envoy's config: sidecar baseline + EnvoyFilters"
                           + (f" + {local_envoy.describe(files)}" if files else "")):
            spec = model.load_spec(vips[model.CLIENT_SERVICE], state.read_policy,
                                   state.mirror_enabled, extra_envoyfilters=files)
            proof.check_envoyfilters(spec.envoyfilters)
            if state.control_plane.name == cp_istiod.NAME:  # istiod reads them
                config = cp_istiod.reconfigure(state, spec)
            else:
                config = self._envoy_config(spec, vips, _plan_of(state), state.directory,
                                            admin_socket)
        with progress.step("envoy --mode validate"):
            sidecar.validate(config, binaries.envoy())
        with progress.step("restart Envoy"):
            process = local_envoy.restart(
                state, lambda: admin_socket.unlink(missing_ok=True))
            state.envoyfilters = files
            state.save()
            self._wait_ready(Admin.of(state.admin, timeout=5.0), bool(files),
                             len(state.topology.nodes), process, state.directory)
        if state.control_plane.name == cp_istiod.NAME:
            state.control_plane.unmatched_envoyfilters = cp_istiod.check_config(
                Admin.of(state.admin, timeout=5.0), spec, mutant=bool(files))
            state.save()
        return state

    def _wait_envoy(self, admin: Admin, expected: int, process: Process, directory: Path) -> None:
        @converge.retry_until(30, 0.05)
        def healthy() -> None:
            if not procs.alive(process):
                raise LabError(f"envoy exited: {self._log_tail(directory, 'envoy')}")
            hosts = admin.hosts(model.PROXY_CLUSTER)
            ok = [h for h, flags in hosts.items() if flags == "healthy"]
            if len(ok) != expected:
                raise converge.NotReady(
                    f"{len(ok)}/{expected} hosts of {model.PROXY_CLUSTER} healthy")

        try:
            healthy()
        except (converge.NotReady, OSError) as exc:
            raise LabError(f"Envoy did not become ready: {exc}") from None

    @staticmethod
    def _redis_version(plan: _Plan, credentials: acl.Credentials) -> str:
        with _node_client(plan.nodes[0], credentials) as client:
            return str(client.info("server").get("redis_version", ""))

    # ---- down ---------------------------------------------------------------------------
    def down(self, name: str, progress: Progress) -> bool:
        """Stop every process of the lab (journal and label) and remove its files.

        Works on a lab whose `up` was killed (the journal) and on one whose state is corrupt
        (the label every lab process carries).
        """
        name = paths.check_name(name)
        directory = paths.lab_dir(name)
        if (not directory.exists() and not procs.labelled(str(directory))
                and locks.held_by(name) is None):
            return False  # nothing to take down (and no registry created for nothing)
        with locks.lab_lock(name, "being taken down", remove=True):
            state: LabState | None = None
            try:
                state = LabState.load(name)
            except CorruptState as exc:
                progress.say(f"{exc}")
            found = procs.labelled(str(directory))
            if state is None and not found and not directory.exists():
                return False
            count = len({p.pid for p in (state.processes if state else []) if procs.alive(p)}
                        | {p.pid for p in found})
            with progress.step(f"stop {count} processes of lab {name!r}"):
                self._remove(name, state)
        return True

    @staticmethod
    def _remove(name: str, state: LabState | None) -> None:
        directory = paths.lab_dir(name)
        if state is not None:
            for process in reversed(state.processes):  # Envoy first, then the nodes
                procs.terminate(process)
        for process in procs.labelled(str(directory)):  # not journaled: still starting
            procs.terminate(process)
        shutil.rmtree(directory, ignore_errors=True)

    def access(self, state: LabState) -> Access:
        return LocalAccess(state)


def _plan_of(state: LabState) -> _Plan:
    """The ports and names of a running lab, from its state (for reconfigure)."""
    names = dict(state.local_facts().names_by_address)
    nodes = [Node(name, address.rsplit(":", 1)[0], int(address.rsplit(":", 1)[1]))
             for address, name in names.items()]
    nodes.sort(key=lambda n: int(n.name.rsplit("-", 1)[1]))
    return _Plan(nodes=nodes, mirror=state.mirror_node, proxy_port=state.proxy.port,
                 names_by_address=names, proxy_host=state.proxy.host or LOOPBACK)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
