"""The embedded backend: six redis-server processes, a mirror and Envoy, all on loopback.

Everything is derived from the manifests: redis.conf from the ConfigMap, node names from
the StatefulSet, Envoy's configuration from the Services (sidecar baseline) and the
EnvoyFilters. The cluster is formed by the real `redis-cli --cluster create`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_delay, wait_fixed

from lab import binaries, model, paths, ports, procs
from lab.backends import local_envoy, local_faults
from lab.backends.base import Access, UpOptions
from lab.envoy import bootstrap, sidecar
from lab.envoy.admin import Admin
from lab.errors import LabError
from lab.model import LabSpec, Service
from lab.progress import Progress
from lab.state import LabState, Process, all_states
from lab.topology import Node, Topology, from_cluster_slots

LOOPBACK = ports.LOOPBACK
# The redis-cluster Service's "cluster IP" on the local backend. It names the sidecar
# listener (`127.0.10.1_6379`) as a real cluster IP would; the listener itself binds
# 127.0.0.1 on the proxy port.
SERVICE_VIPS_BASE = "127.0.10."
NODE_TIMEOUT_MS = 2000  # short, so failover happens in seconds
CLUSTER_PROXY = "custom-redis-cluster"

# redis.conf directives the local backend sets itself, whatever the ConfigMap says.
_LOCAL_DIRECTIVES = {"port", "bind", "dir", "cluster-config-file", "cluster-node-timeout",
                     "daemonize", "logfile", "pidfile", "protected-mode"}


class _NotReady(Exception):
    pass


def _retry_until(seconds: float, interval: float = 0.05) -> Any:
    return retry(stop=stop_after_delay(seconds), wait=wait_fixed(interval),
                 retry=retry_if_exception_type((_NotReady, redis.RedisError, OSError)),
                 reraise=True)


def local_vips(services: tuple[Service, ...]) -> dict[str, str]:
    routed = [s for s in services if not s.headless]
    return {s.name: f"{SERVICE_VIPS_BASE}{i + 1}" for i, s in enumerate(routed)}


def node_conf(manifest_conf: str, port: int, directory: Path) -> str:
    """The ConfigMap's redis.conf with the directives a loopback node needs of its own."""
    kept = [line for line in manifest_conf.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
            and line.split()[0].lower() not in _LOCAL_DIRECTIVES]
    return "\n".join([
        *kept,
        f"port {port}",
        f"bind {LOOPBACK}",
        "protected-mode yes",
        f"dir {directory}",
        "cluster-config-file nodes.conf",
        f"cluster-node-timeout {NODE_TIMEOUT_MS}",
        "save \"\"",
        "",
    ])


def mirror_conf(port: int, directory: Path) -> str:
    return "\n".join([f"port {port}", f"bind {LOOPBACK}", "protected-mode yes",
                      f"dir {directory}", "save \"\"", "appendonly no", ""])


@dataclass
class _Plan:
    """Ports and names for one local lab."""

    nodes: list[Node]
    mirror: Node
    proxy_port: int
    admin_port: int
    names_by_address: dict[str, str] = field(default_factory=dict)


class LocalAccess:
    """Direct TCP: every part of a local lab is on loopback."""

    def __init__(self, state: LabState) -> None:
        self.state = state

    def proxy_client(self) -> redis.Redis:
        return redis.Redis(host=self.state.proxy["host"], port=int(self.state.proxy["port"]),
                           socket_timeout=10, decode_responses=False,
                           protocol=2)  # Envoy speaks RESP2 only (no HELLO)

    def address(self, node: Node) -> tuple[str, int]:
        return node.host, node.port

    def admin_get(self, path: str) -> str:
        return Admin(self.state.admin["host"], int(self.state.admin["port"])).get(path)

    def logs(self) -> dict[str, str]:
        logs = {}
        for log in sorted((self.state.directory / "logs").glob("*.log")):
            logs[log.stem] = log.read_text(encoding="utf-8", errors="replace")[-200_000:]
        return logs

    def fault(self, node: Node, action: str) -> None:
        local_faults.fault(self.state, node, action)

    def close(self) -> None:
        pass


class LocalBackend:
    name = "local"

    # ---- plan ---------------------------------------------------------------------------
    def dry_run(self, options: UpOptions) -> str:
        spec = model.load_spec(SERVICE_VIPS_BASE + "1", options.read_policy, options.mirror)
        sts = spec.statefulset
        lines = [
            f"lab {options.name!r} on backend local (loopback only)",
            f"1. render {', '.join(m.relpath for m in spec.k8s + spec.envoyfilters)}",
            f"2. start {sts.replicas} redis-server nodes {sts.pod(0)}..{sts.pod(sts.replicas - 1)}"
            " with the ConfigMap's redis.conf, and the standalone redis-mirror",
            f"3. redis-cli --cluster create <{sts.replicas} nodes> "
            "--cluster-replicas 1 --cluster-yes",
            "4. wait for cluster_state:ok and 3 shards with one replica each",
            "5. build the Istio-shaped sidecar baseline from the Services, apply "
            + ", ".join(m.relpath for m in spec.envoyfilters) + " with Istio's patch semantics",
            "6. envoy --mode validate, then start Envoy (admin on 127.0.0.1)",
            f"7. wait until /clusters shows all {sts.replicas} hosts of {CLUSTER_PROXY} healthy",
        ]
        return "\n".join(lines)

    # ---- up -----------------------------------------------------------------------------
    def up(self, options: UpOptions, progress: Progress) -> LabState:
        name = paths.check_name(options.name)
        existing = LabState.load(name)
        if existing is not None:
            if any(procs.running(p.pid, p.expect) for p in existing.processes):
                raise LabError(f"lab {name!r} is already up (redis-mesh-lab status --name {name})")
            self._remove(existing)
        directory = paths.lab_dir(name)
        started: list[Process] = []
        try:
            return self._up(options, progress, directory, started)
        except BaseException:
            for process in reversed(started):
                procs.stop(process.pid, process.expect)
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def _up(self, options: UpOptions, progress: Progress, directory: Path,
            started: list[Process]) -> LabState:
        server, cli, envoy = binaries.redis_server(), binaries.redis_cli(), binaries.envoy()
        with progress.step("render manifests into the lab model"):
            probe = model.load_spec(SERVICE_VIPS_BASE + "1", options.read_policy, options.mirror)
            vips = local_vips(probe.services)
            spec = model.load_spec(vips[model.CLIENT_SERVICE], options.read_policy,
                                   options.mirror, extra_envoyfilters=options.envoyfilters)
        sts = spec.statefulset
        (directory / "logs").mkdir(parents=True, exist_ok=True)
        with ports.allocation_lock(paths.home()):
            plan = self._allocate(spec, options)
            with progress.step(f"start {sts.replicas} redis-server nodes and redis-mirror"):
                for node in plan.nodes:
                    started.append(self._start_redis(server, node, directory,
                                                     node_conf(spec.redis_conf, node.port,
                                                               directory / node.name)))
                started.append(self._start_redis(server, plan.mirror, directory,
                                                 mirror_conf(plan.mirror.port,
                                                             directory / plan.mirror.name)))
                self._wait_ping([*plan.nodes, plan.mirror], started, directory)
        with progress.step("redis-cli --cluster create --cluster-replicas 1"):
            self._create_cluster(cli, plan.nodes, directory)
        with progress.step("wait for cluster_state:ok and 3 shards with a replica each"):
            topology = self._wait_cluster(plan)
        with progress.step("derive Envoy's config: sidecar baseline + EnvoyFilters"):
            config_path = self._envoy_config(spec, vips, plan, directory)
        with progress.step("envoy --mode validate"):
            sidecar.validate(config_path, envoy)
        with progress.step(f"start Envoy, wait for {sts.replicas} healthy hosts"):
            argv = [envoy, "-c", str(config_path), "--disable-hot-restart", "-l", "warning",
                    "--log-path", str(directory / "logs" / "envoy.log")]
            if options.envoy_concurrency:
                argv += ["--concurrency", str(options.envoy_concurrency)]
            started.append(Process("envoy", procs.spawn(argv, directory / "logs" / "envoy.log",
                                                         directory), str(config_path)))
            admin = Admin(LOOPBACK, plan.admin_port)
            self._wait_ready(admin, bool(options.envoyfilters), sts.replicas, started[-1],
                             directory)
        state = LabState(
            name=options.name, backend=self.name, read_policy=spec.read_policy,
            mirror_enabled=spec.mirror,
            proxy={"host": LOOPBACK, "port": plan.proxy_port},
            admin={"host": LOOPBACK, "port": plan.admin_port},
            mirror=plan.mirror.to_dict() | {"name": plan.mirror.name},
            shards=topology.to_list(), processes=list(started),
            envoy_version=admin.server_version(), redis_version=self._redis_version(plan),
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            extra={"names_by_address": plan.names_by_address, "vips": vips,
                   "envoy_argv": argv},
            envoyfilters=[str(Path(f).resolve()) for f in options.envoyfilters],
        )
        state.save()
        return state

    def _allocate(self, spec: LabSpec, options: UpOptions) -> _Plan:
        reserved: set[int] = set()
        for other in all_states():
            for part in (other.proxy, other.admin, other.mirror):
                reserved.add(int(part.get("port", 0)))
            reserved.update(int(n.port) + off for n in other.topology.nodes
                            for off in (0, ports.CLUSTER_BUS_OFFSET))
        if options.proxy_port is not None:
            ports.require_free(options.proxy_port, "--proxy-port")
            reserved.add(options.proxy_port)
        sts = spec.statefulset
        node_ports = ports.pick(sts.replicas, reserved, cluster_bus=True)
        reserved.update(node_ports)
        reserved.update(p + ports.CLUSTER_BUS_OFFSET for p in node_ports)
        extra = ports.pick(3 if options.proxy_port is None else 2, reserved)
        proxy_port = options.proxy_port if options.proxy_port is not None else extra.pop()
        nodes = [Node(sts.pod(i), LOOPBACK, port) for i, port in enumerate(node_ports)]
        mirror = Node(model.MIRROR_SERVICE, LOOPBACK, extra[0])
        return _Plan(nodes=nodes, mirror=mirror, proxy_port=proxy_port, admin_port=extra[1],
                     names_by_address={n.address: n.name for n in nodes})

    @staticmethod
    def _start_redis(server: str, node: Node, directory: Path, conf: str) -> Process:
        node_dir = directory / node.name
        node_dir.mkdir(parents=True, exist_ok=True)
        conf_path = node_dir / "redis.conf"
        conf_path.write_text(conf, encoding="utf-8")
        pid = procs.spawn([server, str(conf_path)], directory / "logs" / f"{node.name}.log",
                          node_dir)
        # redis-server rewrites its process title to "<binary> <host>:<port> [cluster]"
        return Process(node.name, pid, node.address)

    @staticmethod
    def _log_tail(directory: Path, name: str, lines: int = 3) -> str:
        log = directory / "logs" / f"{name}.log"
        if not log.is_file():
            return ""
        tail = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        return " | ".join(tail[-lines:])

    def _wait_ping(self, nodes: list[Node], started: list[Process], directory: Path) -> None:
        for node, process in zip(nodes, started[-len(nodes):], strict=True):
            @_retry_until(10)
            def ping(node: Node = node, process: Process = process) -> None:
                if not procs.running(process.pid):
                    raise LabError(f"{node.name} exited: {self._log_tail(directory, node.name)}")
                with redis.Redis(node.host, node.port, socket_timeout=1) as client:
                    client.ping()
            ping()

    @staticmethod
    def _create_cluster(cli: str, nodes: list[Node], directory: Path) -> None:
        argv = [cli, "--cluster", "create", *[n.address for n in nodes],
                "--cluster-replicas", "1", "--cluster-yes"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                check=False)
        (directory / "logs" / "cluster-create.log").write_text(
            " ".join(argv) + "\n" + result.stdout + result.stderr, encoding="utf-8")
        if result.returncode != 0:
            reason = (result.stderr or result.stdout).strip().splitlines()
            raise LabError(f"redis-cli --cluster create failed: {reason[-1] if reason else ''}")

    @staticmethod
    def _wait_cluster(plan: _Plan) -> Topology:
        def name_of(host: str, port: int) -> str:
            return plan.names_by_address.get(f"{host}:{port}", f"{host}:{port}")

        @_retry_until(30, 0.1)
        def converged() -> Topology:
            for node in plan.nodes:
                with redis.Redis(node.host, node.port, socket_timeout=2) as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" not in text:
                        raise _NotReady(f"{node.name}: cluster_state not ok")
            with redis.Redis(plan.nodes[0].host, plan.nodes[0].port, socket_timeout=2) as client:
                reply = client.execute_command("CLUSTER", "SLOTS", NEVER_DECODE=True)
            topology = from_cluster_slots(reply, name_of)
            if len(topology.shards) != 3 or any(len(s.replicas) != 1 for s in topology.shards):
                raise _NotReady("CLUSTER SLOTS does not show 3 shards with a replica each yet")
            return topology

        try:
            return converged()
        except (_NotReady, RetryError, redis.RedisError, OSError) as exc:
            raise LabError(f"the cluster did not converge: {exc}") from None

    @staticmethod
    def _envoy_config(spec: LabSpec, vips: dict[str, str], plan: _Plan, directory: Path) -> Path:
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
        boot = bootstrap.build(config, (LOOPBACK, plan.admin_port), f"sidecar~{LOOPBACK}~"
                               f"redis-client.redis~redis.svc.cluster.local", resolve)
        return sidecar.write(boot, directory / "envoy.json")

    def _wait_ready(self, admin: Admin, mutant: bool, expected: int, process: Process,
                    directory: Path) -> None:
        """A mutant lab is ready when Envoy is LIVE: the suite judges its proxy, not `up`."""
        if mutant:
            local_envoy.wait_live(admin, process, lambda: self._log_tail(directory, "envoy"))
        else:
            self._wait_envoy(admin, expected, process, directory)

    def reconfigure(self, name: str, envoyfilters: Sequence[Path | str],
                    progress: Progress) -> LabState:
        """Swap the extra EnvoyFilters of a running lab; restart only Envoy."""
        state = LabState.load(paths.check_name(name))
        if state is None or state.backend != self.name:
            raise LabError(f"lab {name!r} is not up on backend local")
        files = [str(Path(f).resolve()) for f in envoyfilters]
        vips = dict(state.extra["vips"])
        with progress.step("derive Envoy's config: sidecar baseline + EnvoyFilters"
                           + (f" + {local_envoy.describe(files)}" if files else "")):
            spec = model.load_spec(vips[model.CLIENT_SERVICE], state.read_policy,
                                   state.mirror_enabled, extra_envoyfilters=files)
            config_path = self._envoy_config(spec, vips, _plan_of(state), state.directory)
        with progress.step("envoy --mode validate"):
            sidecar.validate(config_path, binaries.envoy())
        with progress.step("restart Envoy"):
            argv = state.extra.get("envoy_argv") or [
                binaries.envoy(), "-c", str(config_path), "--disable-hot-restart", "-l",
                "warning", "--log-path", str(state.directory / "logs" / "envoy.log")]
            process = local_envoy.restart(state, argv, state.directory / "logs" / "envoy.log")
            state.envoyfilters = files
            state.save()
            self._wait_ready(Admin(LOOPBACK, int(state.admin["port"])), bool(files),
                             len(state.topology.nodes), process, state.directory)
        return state

    def _wait_envoy(self, admin: Admin, expected: int, process: Process, directory: Path) -> None:
        @_retry_until(30, 0.05)
        def healthy() -> None:
            if not procs.running(process.pid):
                raise LabError(f"envoy exited: {self._log_tail(directory, 'envoy')}")
            hosts = admin.hosts(CLUSTER_PROXY)
            ok = [h for h, flags in hosts.items() if flags == "healthy"]
            if len(ok) != expected:
                raise _NotReady(f"{len(ok)}/{expected} hosts of {CLUSTER_PROXY} healthy")

        try:
            healthy()
        except (_NotReady, OSError) as exc:
            raise LabError(f"Envoy did not become ready: {exc}") from None

    @staticmethod
    def _redis_version(plan: _Plan) -> str:
        with redis.Redis(plan.nodes[0].host, plan.nodes[0].port, socket_timeout=2) as client:
            return str(client.info("server").get("redis_version", ""))

    # ---- down ---------------------------------------------------------------------------
    def down(self, name: str, progress: Progress) -> bool:
        state = LabState.load(name)
        if state is None:
            directory = paths.lab_dir(name)
            if directory.exists():
                shutil.rmtree(directory, ignore_errors=True)
            return False
        with progress.step(f"stop {len(state.processes)} processes of lab {name!r}"):
            self._remove(state)
        return True

    @staticmethod
    def _remove(state: LabState) -> None:
        for process in reversed(state.processes):  # Envoy first, then the nodes
            procs.stop(process.pid, process.expect)
        shutil.rmtree(state.directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            paths.home().rmdir()  # only if no other lab is left

    def access(self, state: LabState) -> Access:
        return LocalAccess(state)


def _plan_of(state: LabState) -> _Plan:
    """The ports and names of a running lab, from its state (for reconfigure)."""
    names = dict(state.extra["names_by_address"])
    nodes = [Node(name, address.rsplit(":", 1)[0], int(address.rsplit(":", 1)[1]))
             for address, name in names.items()]
    nodes.sort(key=lambda n: int(n.name.rsplit("-", 1)[1]))
    return _Plan(nodes=nodes, mirror=state.mirror_node, proxy_port=int(state.proxy["port"]),
                 admin_port=int(state.admin["port"]), names_by_address=names)
