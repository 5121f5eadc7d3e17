"""The embedded backend's runtime: six redis-server processes, a mirror and Envoy, all on
loopback, carrying out the stages of lab.pipeline.

Everything is derived from the manifests: redis.conf from the ConfigMap, node names from
the StatefulSet, Envoy's configuration from the Services (sidecar baseline) and the
EnvoyFilters. The cluster is formed by the real `redis-cli --cluster create`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from lab import acl, binaries, model, paths, ports, procs, settings
from lab.backends import converge
from lab.backends.base import Access, UpOptions
from lab.controlplane import addresses as cp_addresses
from lab.controlplane import istiod as cp_istiod
from lab.envoy import bootstrap, proof, sidecar
from lab.envoy.admin import Admin
from lab.errors import LabError
from lab.model import LabSpec, Service
from lab.pipeline import BuildBase, ProxyProof, StageKey, poll
from lab.pipeline.stages import stage
from lab.progress import Progress
from lab.state import (
    AdminEndpoint,
    LabState,
    LocalFacts,
    LocalPorts,
    MirrorEndpoint,
    Process,
    ProxyEndpoint,
    all_states,
)
from lab.topology import Node, Topology

from . import envoy as local_envoy
from .access import LocalAccess
from .conf import (
    LOOPBACK,
    SERVICE_VIPS_BASE,
    local_vips,
    mirror_conf,
    node_conf,
    redis_major,
    write_private,
)

ADMIN_SOCKET = "envoy-admin.sock"
PORT_ATTEMPTS = 4


@dataclass
class _Plan:
    """Ports and names for one local lab."""

    nodes: list[Node]
    mirror: Node
    proxy_port: int
    names_by_address: dict[str, str] = field(default_factory=dict)
    proxy_host: str = LOOPBACK


class _PortConflict(Exception):
    """A process lost a race for its port: retry with another one."""


def _node_client(node: Node, credentials: acl.Credentials, timeout: float = 2) -> redis.Redis:
    return redis.Redis(node.host, node.port, socket_timeout=timeout,
                       username=credentials.username, password=credentials.password)


def _log_tail(directory: Path, name: str, lines: int = 3, offset: int = 0) -> str:
    log = directory / "logs" / f"{name}.log"
    if not log.is_file():
        return ""
    with open(log, "rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    tail = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(tail[-lines:])


def _journal(journal: LabState, process: Process) -> Process:
    journal.processes.append(process)
    journal.save()
    return process


class LocalRuntime:
    name = "local"
    variant_capacity: int | None = None

    @property
    def timeouts(self) -> Mapping[StageKey, float]:
        return {StageKey.CLUSTER: settings.CLUSTER_CREATE_TIMEOUT.seconds()}

    # ---- the plan ---------------------------------------------------------------------
    def header(self, options: UpOptions) -> list[str]:
        where = paths.home() / options.name
        scope = "" if options.control_plane == cp_istiod.NAME else " (loopback only)"
        return [f"lab {options.name!r} on backend local{scope}, state in {where}"]

    def describe(self, key: StageKey, options: UpOptions) -> list[str]:
        spec = model.load_spec(SERVICE_VIPS_BASE + "1", options.read_policy, options.mirror)
        sts = spec.statefulset
        istiod = options.control_plane == cp_istiod.NAME
        block, proxy = cp_istiod.plan_lines()
        where = paths.home() / options.name
        lines: dict[StageKey, list[str]] = {
            StageKey.RENDER: [", ".join(m.relpath for m in spec.k8s + spec.envoyfilters)],
            StageKey.INFRASTRUCTURE: [
                "the lab's ACL: the default user without CONFIG, DEBUG, SAVE, SHUTDOWN, "
                f"MODULE...; the admin user {acl.ADMIN_USER}, its password in admin.password "
                "(0600)"],
            StageKey.CONTROL_PLANE: [block] if istiod else [
                "builtin: our implementation of Istio's EnvoyFilter semantics; nothing to "
                "start, it derives Envoy's config at the proxy stage"],
            StageKey.NODES: [
                f"{sts.replicas} redis-server nodes {sts.pod(0)}..{sts.pod(sts.replicas - 1)} "
                "with the ConfigMap's redis.conf and the ACL, and redis-mirror, on ports "
                "chosen under the registry's allocation lock (a port lost to another program: "
                "started again on another)"],
            StageKey.CLUSTER: [
                f"redis-cli --user {acl.ADMIN_USER} --cluster create <{sts.replicas} nodes> "
                "--cluster-replicas 1 --cluster-yes"],
            StageKey.CONVERGE: ["CLUSTER INFO and CLUSTER SLOTS of every node, as the admin "
                                "user"],
            StageKey.PROXY: [proxy] if istiod else [
                "build the Istio-shaped sidecar baseline from the Services, apply "
                + ", ".join(m.relpath for m in spec.envoyfilters)
                + " with Istio's patch semantics",
                f"envoy --mode validate, then start Envoy (admin on {where / ADMIN_SOCKET}, "
                "mode 0600)",
                f"/clusters of the admin socket: {sts.replicas} healthy hosts of "
                f"{model.PROXY_CLUSTER}"],
            StageKey.PROVE: [
                ("istiod's push: " if istiod else "")
                + "config_dump of the admin socket; SET/GET/DEL through the proxy port"],
        }
        return lines.get(key, [])

    # ---- up ---------------------------------------------------------------------------
    def preflight(self, options: UpOptions) -> None:
        if options.spare_pods and options.control_plane == cp_istiod.NAME:
            raise LabError("--spare-pods needs --control-plane builtin (istiod's inputs list "
                           "the StatefulSet's six pods)")

    def build(self, options: UpOptions, journal: LabState, progress: Progress) -> LocalBuild:
        return LocalBuild(options, journal, progress)

    # ---- what a lab left -------------------------------------------------------------
    def running(self, state: LabState) -> bool:
        return any(procs.alive(p) for p in state.processes)

    def leftovers(self, name: str) -> bool:
        return bool(procs.labelled(str(paths.lab_dir(name))))

    def stop(self, name: str, state: LabState | None, progress: Progress) -> bool:
        """Every process of the lab: the journal's (Envoy first, then the nodes), then any
        still carrying the lab's label (started, not journaled yet)."""
        journaled = [p for p in reversed(state.processes if state else []) if procs.alive(p)]
        for process in journaled:
            procs.terminate(process)
        labelled = procs.labelled(str(paths.lab_dir(name)))
        for process in labelled:
            procs.terminate(process)
        stopped = len({p.pid for p in journaled} | {p.pid for p in labelled})
        if stopped:
            progress.say(f"  - stopped {stopped} processes")
        return bool(stopped)

    def access(self, state: LabState) -> Access:
        return LocalAccess(state)

    def reconfigure(self, name: str, envoyfilters: Sequence[Path | str],
                    progress: Progress) -> LabState:
        """Swap the extra EnvoyFilters of a running lab; restart only Envoy."""
        state = LabState.load(paths.check_name(name))
        if state is None or state.backend != self.name:
            raise LabError(f"lab {name!r} is not up on backend local")
        files = [str(Path(f).resolve()) for f in envoyfilters]
        vips = dict(state.local_facts().vips)
        admin_socket = Path(state.admin.socket)
        istiod = state.control_plane.name == cp_istiod.NAME
        with progress.step("derive Envoy's config: sidecar baseline + EnvoyFilters"
                           + (f" + {local_envoy.describe(files)}" if files else "")):
            spec = model.load_spec(vips[model.CLIENT_SERVICE], state.read_policy,
                                   state.mirror_enabled, extra_envoyfilters=files)
            proof.check_envoyfilters(spec.envoyfilters)
            if istiod:  # istiod reads them
                config = cp_istiod.reconfigure(state, spec)
            else:
                config = envoy_config(spec, vips, _plan_of(state), state.directory,
                                      admin_socket)
        with progress.step("envoy --mode validate"):
            sidecar.validate(config, binaries.envoy())
        with progress.step("restart Envoy"):
            process = local_envoy.restart(
                state, lambda: admin_socket.unlink(missing_ok=True))
            state.envoyfilters = files
            state.save()
            admin = Admin.of(state.admin, timeout=5.0)
            local_envoy.wait_live(admin, process, lambda: _log_tail(state.directory, "envoy"))
            if not files:
                ready = stage(StageKey.PROXY)
                poll(_healthy_hosts(admin, len(state.topology.nodes), process, state.directory),
                     ready, ready.timeout_s or 30, LocalBuild.poll_interval)
        if istiod:
            state.control_plane.unmatched_envoyfilters = cp_istiod.check_config(
                Admin.of(state.admin, timeout=5.0), spec, mutant=bool(files))
            state.save()
        return state


def _healthy_hosts(admin: Admin, expected: int, process: Process,
                   directory: Path) -> Callable[[], str | None]:
    def probe() -> str | None:
        if not procs.alive(process):
            raise LabError(f"envoy exited: {_log_tail(directory, 'envoy')}")
        try:
            hosts = admin.hosts(model.PROXY_CLUSTER)
        except OSError as exc:
            return f"Envoy's admin API: {exc}"
        ok = [h for h, flags in hosts.items() if flags == "healthy"]
        if len(ok) != expected:
            return f"{len(ok)}/{expected} hosts of {model.PROXY_CLUSTER} healthy"
        return None
    return probe


class LocalBuild(BuildBase):
    """One `up` of a local lab (lab.pipeline.runtime.Build)."""

    def __init__(self, options: UpOptions, journal: LabState, progress: Progress) -> None:
        super().__init__(options, journal, progress)
        self.holds = ports.Holds()
        self.mutant = tuple(options.envoyfilters)
        self.admin_socket = self.directory / ADMIN_SOCKET
        self.admin = Admin(socket_path=str(self.admin_socket), timeout=5.0)
        self.config_path = self.directory / "envoy.json"
        self.block: cp_addresses.Block | None = None
        self.vips: dict[str, str] = {}
        self._plan: _Plan | None = None
        self._credentials: acl.Credentials | None = None
        self.security: list[str] = []
        self._view: converge.ClusterView | None = None
        self._envoy: Process | None = None

    @property
    def plan(self) -> _Plan:
        assert self._plan is not None, "start the nodes first"
        return self._plan

    @property
    def credentials(self) -> acl.Credentials:
        assert self._credentials is not None, "prepare first"
        return self._credentials

    @property
    def members(self) -> list[Node]:
        return self.plan.nodes[:self.spec.statefulset.replicas]

    # ---- render, infrastructure, control plane -----------------------------------------
    def render(self) -> LabSpec:
        options = self.options
        if options.control_plane == cp_istiod.NAME:
            self.block = cp_istiod.require_block(options.name, all_states())
        with self.progress.step("render manifests into the lab model"):
            probe = model.load_spec(SERVICE_VIPS_BASE + "1", options.read_policy,
                                    options.mirror)
            self.vips = (cp_istiod.vips(probe, self.block) if self.block
                         else local_vips(probe.services))
            self._spec = model.load_spec(self.vips[model.CLIENT_SERVICE], options.read_policy,
                                         options.mirror, extra_envoyfilters=self.mutant)
            proof.check_envoyfilters(self._spec.envoyfilters + self._spec.extra_envoyfilters)
        return self._spec

    def prepare(self) -> None:
        with self.progress.step("the lab's ACL (its admin user)"):
            self._credentials = acl.create(self.directory)
            self.security = acl.conf_lines(self._credentials,
                                           redis_major(binaries.redis_server()))

    def start_control_plane(self) -> None:
        if self.block is None:
            return  # builtin: the patcher derives Envoy's config at the proxy stage
        with self.progress.step(f"start {cp_istiod.describe()} and the lab's DNS"):
            def launch(name: str, argv: list[str], log: Path, cwd: Path, expect: str) -> Process:
                return procs.launch(name, argv, log, cwd, str(self.directory), expect=expect,
                                    record=lambda p: _journal(self.journal, p))

            admin_path = (str(self.admin_socket) if len(str(self.admin_socket)) < 100
                          else self.admin_socket.name)
            boot = cp_istiod.start(self.spec, self.block, self.directory, launch=launch,
                                   admin=admin_path)
            sidecar.write(boot, self.config_path)
            self.config_path.chmod(0o600)
            self.journal.control_plane = cp_istiod.facts(self.block)

    # ---- nodes, cluster, converge -------------------------------------------------------
    def start_nodes(self) -> None:
        """Choose the ports (serialised with other labs of this registry), start the nodes."""
        spec = self.spec
        with ports.allocation_lock(paths.home()):
            plan = self._allocate()
            if self.block:
                plan = _on_block(plan, self.block, cp_istiod.vips(spec, self.block))
            self.journal.local = self.journal.local or LocalFacts()
            self.journal.local.ports = LocalPorts(nodes=[n.port for n in plan.nodes],
                                                  mirror=plan.mirror.port,
                                                  proxy=plan.proxy_port)
            self.journal.save()
            with self.progress.step(f"start {len(plan.nodes)} redis-server nodes and "
                                    "redis-mirror"):
                confs: dict[str, Callable[[int, Path], str]] = {n.name: functools.partial(
                    node_conf, spec.redis_conf, security=self.security, host=n.host)
                    for n in plan.nodes}
                confs[plan.mirror.name] = functools.partial(
                    mirror_conf, security=self.security, host=plan.mirror.host)
                self._plan = plan
                started = self._start_nodes([*plan.nodes, plan.mirror], confs)
        plan.nodes, plan.mirror = started[:-1], started[-1]
        plan.names_by_address = {n.address: n.name for n in plan.nodes}

    def nodes_not_ready(self) -> str | None:
        for node in [*self.plan.nodes, self.plan.mirror]:
            try:
                with redis.Redis(node.host, node.port, socket_timeout=1) as client:
                    client.ping()
            except (redis.RedisError, OSError) as exc:
                return f"{node.name}: {exc}"
        return None

    def create_cluster(self) -> None:
        members, credentials = self.members, self.credentials
        argv = [binaries.redis_cli(), *credentials.cli_args(), "--cluster", "create",
                *[n.address for n in members], "--cluster-replicas", "1", "--cluster-yes"]
        timeout = settings.CLUSTER_CREATE_TIMEOUT.seconds()
        with self.progress.step("redis-cli --cluster create --cluster-replicas 1"):
            try:
                result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                        check=False, env={**os.environ,
                                                          **credentials.cli_env()})
            except subprocess.TimeoutExpired:
                raise LabError(f"redis-cli --cluster create did not finish in {timeout:g}s"
                               ) from None
            (self.directory / "logs" / "cluster-create.log").write_text(
                " ".join(argv) + "\n" + result.stdout + result.stderr, encoding="utf-8")
            if result.returncode != 0:
                reason = (result.stderr or result.stdout).strip().splitlines()
                raise LabError("redis-cli --cluster create failed: "
                               f"{reason[-1] if reason else ''}")

    def cluster_not_converged(self) -> str | None:
        if self._view is None:
            credentials = self.credentials
            self._view = converge.ClusterView(self.members,
                                              lambda n: _node_client(n, credentials),
                                              self.plan.names_by_address)
        return self._view.not_converged()

    def topology(self) -> Topology:
        assert self._view is not None, "converge first"
        return self._view.topology

    # ---- proxy --------------------------------------------------------------------------
    def start_proxy(self) -> None:
        if self.block is None:
            with self.progress.step("derive Envoy's config: sidecar baseline + EnvoyFilters"):
                envoy_config(self.spec, self.vips, self.plan, self.directory,
                             self.admin_socket)
        with self.progress.step("envoy --mode validate"):
            sidecar.validate(self.config_path, binaries.envoy())
        with self.progress.step("start Envoy, wait until it is live"):
            self._envoy = self._start_envoy()
            # LIVE first: Envoy takes the clusters before the listeners, and fed by istiod it
            # is LIVE only once its first listeners have arrived (the hosts alone do not say)
            local_envoy.wait_live(self.admin, self._envoy,
                                  lambda: _log_tail(self.directory, "envoy"))

    def proxy_not_ready(self) -> str | None:
        if self.mutant:  # judged by the suite, not refused by readiness
            return None
        assert self._envoy is not None
        return _healthy_hosts(self.admin, self.spec.statefulset.replicas, self._envoy,
                              self.directory)()

    def check_control_plane(self) -> None:
        if self.block is None:
            return
        with self.progress.step("istiod's push holds what every EnvoyFilter asks for"):
            self.journal.control_plane.unmatched_envoyfilters = cp_istiod.check_config(
                self.admin, self.spec, mutant=bool(self.mutant))

    def proof(self) -> ProxyProof:
        plan = self.plan
        return ProxyProof(
            config_dump=lambda: self.admin.get("/config_dump"),
            listener=f"{self.vips[model.CLIENT_SERVICE]}_{model.REDIS_PORT}",
            client=lambda: redis.Redis(plan.proxy_host, plan.proxy_port, socket_timeout=5,
                                       protocol=2),
            where=f"{plan.proxy_host}:{plan.proxy_port}")

    def finish(self) -> None:
        journal, plan, spec = self.journal, self.plan, self.spec
        journal.read_policy = spec.read_policy
        journal.mirror_enabled = spec.mirror
        journal.proxy = ProxyEndpoint(host=plan.proxy_host, port=plan.proxy_port)
        journal.admin = AdminEndpoint(socket=str(self.admin_socket))
        journal.mirror = MirrorEndpoint(host=plan.mirror.host, port=plan.mirror.port)
        journal.shards = self.topology().to_list()
        journal.spares = [n.to_dict() for n in plan.nodes[spec.statefulset.replicas:]]
        journal.envoy_version = self.admin.server_version()
        with _node_client(plan.nodes[0], self.credentials) as client:
            journal.redis_version = str(client.info("server").get("redis_version", ""))
        journal.local = dataclasses.replace(
            journal.local_facts(), names_by_address=plan.names_by_address, vips=self.vips,
            envoy_config=str(self.config_path))
        if self.mutant:
            journal.envoyfilters = [str(path) for path in self.mutant]

    def diagnostics(self, dest: Path) -> Path | None:
        return None  # the lab's logs are its diagnostics; a failed `up` removes them

    def undo(self) -> bool:
        LocalRuntime().stop(self.journal.name, self.journal, Progress(quiet=True))
        return True

    def close(self) -> None:
        self.holds.release_all()

    # ---- the pieces -------------------------------------------------------------------
    def _allocate(self) -> _Plan:
        options, holds = self.options, self.holds
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
        sts = self.spec.statefulset
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

    def _start_nodes(self, targets: list[Node],
                     confs: dict[str, Callable[[int, Path], str]]) -> list[Node]:
        """Start every redis-server; one that loses its port to a race gets another one."""
        directory, holds, plan = self.directory, self.holds, self.plan
        server = binaries.redis_server()
        pending = list(targets)
        result: dict[str, Node] = {}
        for _attempt in range(PORT_ATTEMPTS):
            launched: list[tuple[Node, Process, int]] = []
            for node in pending:
                holds.release(node.port, node.port + ports.CLUSTER_BUS_OFFSET)
                node_dir = directory / node.name
                node_dir.mkdir(mode=0o700, exist_ok=True)
                conf_path = node_dir / "redis.conf"
                write_private(conf_path, confs[node.name](node.port, node_dir))
                log = directory / "logs" / f"{node.name}.log"
                offset = log.stat().st_size if log.exists() else 0
                process = procs.launch(node.name, [server, str(conf_path)], log, node_dir,
                                       str(directory), expect=node.address,
                                       record=lambda p: _journal(self.journal, p))
                launched.append((node, process, offset))
            lost: list[Node] = []
            for node, process, offset in launched:
                try:
                    self._wait_ping(node, process, offset)
                    result[node.name] = node
                except _PortConflict:
                    lost.append(node)
                    self.journal.processes.remove(process)  # it exited: the retry is recorded
                    self.journal.save()
            if not lost:
                return [result[n.name] for n in targets]
            taken = {n.port for n in result.values()} | {plan.proxy_port}
            taken |= {p + ports.CLUSTER_BUS_OFFSET for p in taken}
            fresh = ports.pick(len(lost), taken, cluster_bus=True, holds=holds)
            pending = [Node(n.name, n.host, port) for n, port in zip(lost, fresh, strict=True)]
        raise LabError(f"{pending[0].name}: its port was taken {PORT_ATTEMPTS} times in a row")

    def _wait_ping(self, node: Node, process: Process, offset: int) -> None:
        directory = self.directory

        @converge.retry_until(10)
        def ping() -> None:
            if not procs.alive(process):
                tail = _log_tail(directory, node.name, 20, offset)
                if ports.IN_USE in tail:
                    raise _PortConflict(node.name)
                last = _log_tail(directory, node.name, 3, offset)
                raise LabError(f"{node.name} exited: {last}")
            with redis.Redis(node.host, node.port, socket_timeout=1) as client:
                client.ping()
        try:
            ping()
        except (redis.RedisError, OSError, converge.NotReady) as exc:
            raise LabError(f"{node.name} did not answer PING: {exc}") from None

    def _start_envoy(self) -> Process:
        """Start Envoy; if it loses a chosen proxy port to a race, choose another one."""
        directory, plan, options = self.directory, self.plan, self.options
        log = directory / "logs" / "envoy.log"
        for _attempt in range(PORT_ATTEMPTS):
            argv = [binaries.envoy(), "-c", str(self.config_path), "--disable-hot-restart",
                    "-l", "warning", "--log-path", str(log)]
            if options.envoy_concurrency:
                argv += ["--concurrency", str(options.envoy_concurrency)]
            offset = log.stat().st_size if log.exists() else 0
            self.holds.release(plan.proxy_port)
            process = procs.launch("envoy", argv, log, directory, str(directory),
                                   record=lambda p: _journal(self.journal, p))
            if not _lost_port(process, log, offset, Admin(socket_path=str(self.admin_socket))):
                return process
            self.journal.processes.remove(process)
            self.journal.save()
            if options.proxy_port is not None:
                raise LabError(f"--proxy-port {options.proxy_port} is already in use on "
                               f"{LOOPBACK}")
            self.admin_socket.unlink(missing_ok=True)
            taken = {n.port for n in plan.nodes} | {plan.mirror.port}
            plan.proxy_port = ports.pick(1, taken, holds=self.holds)[0]
            envoy_config(self.spec, self.vips, plan, directory, self.admin_socket)
        raise LabError(f"Envoy's proxy port was taken {PORT_ATTEMPTS} times in a row")


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


def _on_block(plan: _Plan, block: cp_addresses.Block, vips: dict[str, str]) -> _Plan:
    """istiod mode: each node and the mirror on an address of its own at the Service
    port, the proxy on the redis-cluster VIP at 6379, where the client connects."""
    nodes = [Node(n.name, block.node(i), model.REDIS_PORT) for i, n in enumerate(plan.nodes)]
    return _Plan(nodes=nodes, mirror=Node(plan.mirror.name, block.mirror, model.REDIS_PORT),
                 proxy_port=model.REDIS_PORT, proxy_host=vips[model.CLIENT_SERVICE],
                 names_by_address={n.address: n.name for n in nodes})


def envoy_config(spec: LabSpec, vips: dict[str, str], plan: _Plan, directory: Path,
                 admin_socket: Path) -> Path:
    """Envoy's static bootstrap from the builtin control plane: the Istio-shaped sidecar
    baseline from the Services, the EnvoyFilters applied with Istio's patch semantics."""
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


def _plan_of(state: LabState) -> _Plan:
    """The ports and names of a running lab, from its state (for reconfigure)."""
    names = dict(state.local_facts().names_by_address)
    nodes = [Node(name, address.rsplit(":", 1)[0], int(address.rsplit(":", 1)[1]))
             for address, name in names.items()]
    nodes.sort(key=lambda n: int(n.name.rsplit("-", 1)[1]))
    return _Plan(nodes=nodes, mirror=state.mirror_node, proxy_port=state.proxy.port,
                 names_by_address=names, proxy_host=state.proxy.host or LOOPBACK)
