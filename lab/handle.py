"""The `Lab` handle: what a test gets (the `lab` fixture). It hides the backend behind an `Access`.

- `lab.proxy`: a `redis.Redis` that talks to the cluster through the proxy, as the
  application does (replies are bytes); `lab.proxy_client(decode_responses=True)` gives one
  that returns str.
- `lab.client(node)`: a direct client of one node or of the mirror (`lab.client(lab.mirror)`);
  `lab.client(node, readonly=True)` sends READONLY first, so a replica serves reads of its
  slots instead of answering MOVED.
- `lab.nodes`, `lab.topology` (shards, masters, replicas, slot ranges), `lab.mirror`.
- `lab.monitor(nodes)`: MONITOR capture over any set of nodes; `lab.proxy_hosts()`: the
  proxy's view of the cluster from Envoy's admin; `lab.implementation()`: what is under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterable
from typing import Any

import redis

from lab import model, waits
from lab.backends.base import Access
from lab.envoy.admin import (
    CLUSTERS_JSON,
    WORKER_CONNECTIONS,
    parse_hosts,
    parse_worker_connections,
)
from lab.faults import Faults
from lab.monitor import MonitorCapture
from lab.state import LabState
from lab.topology import Node, Topology, from_cluster_slots

# what says where a proxy connection goes, per connection class: TCP, Unix socket, kube pipe
_WHERE = ("host", "port", "path", "argv")


class Lab:
    def __init__(self, state: LabState, access: Access) -> None:
        self.state = state
        self._access = access
        self._clients: dict[tuple[str, bool], redis.Redis] = {}
        self._proxy: redis.Redis | None = None
        self._extra: list[redis.Redis] = []
        # (connection, its stream): closing both ends a pipe's process too
        self._streams: list[tuple[Any, socket.socket]] = []
        self.captures: list[MonitorCapture] = []  # this test's, attached on failure
        self.faults = Faults(self._access.fault, self._node)

    # ---- what the lab is --------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.state.name

    @property
    def topology(self) -> Topology:
        """The topology now, read from the cluster (CLUSTER SLOTS), not the one at `up`.

        Asked of the first node that answers. `lab.state.topology` is the topology at `up`.
        """
        return self.cluster_slots_topology()

    @property
    def mirror(self) -> Node:
        return self.state.mirror_node

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The six cluster nodes (as started, whatever their role now)."""
        return tuple(sorted(self.state.topology.nodes, key=lambda n: n.name))

    @property
    def spares(self) -> tuple[Node, ...]:
        """Redis pods running but not in the cluster at `up` (`UpOptions.spare_pods`): the
        StatefulSet scaled up, for a test to `redis-cli --cluster add-node`."""
        return tuple(self.state.spare_nodes)

    def implementation(self) -> dict[str, Any]:
        """For reports: what was under test (not for tests to adapt to)."""
        return {
            "lab": self.state.name,
            "proxy": "envoy",
            "envoyVersion": self.state.envoy_version,
            "redisVersion": self.state.redis_version,
            "backend": self.state.backend,
            "istioProfile": self.state.istio_profile,
            "readPolicy": self.state.read_policy,
            "mirrorEnabled": self.state.mirror_enabled,
            # Who turned the EnvoyFilters into Envoy config: a backend may say (istiod);
            # else Istio on Kubernetes, else our builtin patcher (local, docker).
            "controlPlane": self.state.control_plane.description
            or (f"istio ({self.state.istio_profile})" if self.state.istio_profile
                else "builtin patcher"),
            "envoyfilters": list(self.state.envoyfilters),
        }

    # ---- clients ------------------------------------------------------------------------------
    @property
    def proxy(self) -> redis.Redis:
        """The application's view: one Redis, reached through Envoy (replies are bytes)."""
        if self._proxy is None:
            client = self._access.proxy_client()
            if not isinstance(client, redis.Redis):
                raise TypeError(f"{type(client).__name__} is not a redis.Redis")
            self._proxy = client
        return self._proxy

    def proxy_client(self, *, decode_responses: bool = False) -> redis.Redis:
        """A new client through the proxy, on its own connections; closed with the lab handle.

        `decode_responses=True` returns str instead of bytes.
        """
        pool = self.proxy.connection_pool
        kwargs = {**pool.connection_kwargs, "decode_responses": decode_responses}
        client = redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **kwargs))
        self._extra.append(client)
        return client

    def plain_proxy_client(self, **settings: Any) -> redis.Redis:
        """A new client through the proxy with redis-py's own defaults (its protocol, no
        timeout) except `settings`, as an application would make one; closed with the lab.
        Its connections are of the lab's own kind (TCP, a Unix socket, a pipe out of the
        client pod)."""
        kind, where = self._proxy_where()
        client = redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=kind, **where, **settings))
        self._extra.append(client)
        return client

    def proxy_stream(self, timeout: float) -> socket.socket:
        """A byte stream to the proxy and nothing else: no handshake (redis-py's HELLO or
        CLIENT SETINFO), for a client that speaks RESP by hand. Closed with the lab."""
        kind, where = self._proxy_where()
        connection = kind(**where, socket_timeout=timeout)
        # every connection class opens its stream here, before redis-py's own handshake
        stream: socket.socket = connection._connect()
        stream.settimeout(timeout)
        self._streams.append((connection, stream))
        return stream

    def _proxy_where(self) -> tuple[Any, dict[str, Any]]:
        """The proxy's connection class and where it connects, without the lab's settings."""
        pool = self.proxy.connection_pool
        return pool.connection_class, {k: v for k, v in pool.connection_kwargs.items()
                                       if k in _WHERE}

    def client(self, node: Node | str, *, readonly: bool = False) -> redis.Redis:
        """A direct client of one node (or of the mirror: `lab.client(lab.mirror)`).

        `readonly=True` sends READONLY on every new connection, so a replica serves reads of
        its master's slots (without it a replica answers MOVED).
        """
        target = node if isinstance(node, Node) else self._node(node)
        key = (target.name, readonly)
        if key not in self._clients:
            host, port = self._access.address(target)
            auth = self._auth()  # the lab's admin user
            connect: Any = _readonly_on_connect if readonly else None  # redis-py passes the
            self._clients[key] = redis.Redis(host, port, socket_timeout=10, protocol=2,
                                             redis_connect_func=connect,  # connection to it
                                             username=auth.get("username"),
                                             password=auth.get("password"))
        return self._clients[key]

    def _node(self, node: Node | str) -> Node:
        if isinstance(node, Node):
            return node
        if node == self.mirror.name:
            return self.mirror
        spare = next((n for n in self.spares if n.name == node), None)
        return spare if spare is not None else self.state.topology.node(node)

    def _auth(self) -> dict[str, str]:
        """The lab's admin user ({} when the backend has none)."""
        credentials = getattr(self._access, "credentials", None)
        return dict(credentials()) if credentials is not None else {}

    def redis_cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """redis-cli as the lab's admin user, e.g. `--cluster reshard HOST:PORT` with
        addresses from `cli_address()`: the nodes refuse cluster management to anyone else.
        The password goes through REDISCLI_AUTH, never on the command line. It runs where
        every node is reachable: here, or in redis-cluster-0 on Kubernetes."""
        auth, env, user = self._auth(), dict(os.environ), []
        if auth.get("password"):
            user = ["--user", auth["username"]]
            env["REDISCLI_AUTH"] = auth["password"]
        return subprocess.run(self._access.cluster_cli(*user, *args), capture_output=True,
                              text=True, timeout=timeout, check=False, env=env)

    def cli_address(self, node: Node | str) -> str:
        """"host:port" of a node as `redis_cli` reaches it (a pod IP on Kubernetes)."""
        return self._access.cli_address(self._node(node))

    def proxy_cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """redis-cli sending `args` through the proxy, as the application runs it (on
        Kubernetes from the client pod: `kubectl exec ... redis-cli -h redis-cluster`)."""
        return subprocess.run(self._access.proxy_cli(*args), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def address(self, node: Node | str) -> str:
        """Where this process reaches a node ("host:port"; a port-forward on Kubernetes)."""
        host, port = self._access.address(self._node(node))
        return f"{host}:{port}"

    # ---- observing ----------------------------------------------------------------------------
    def monitor(self, nodes: Iterable[Node] | None = None) -> MonitorCapture:
        """MONITOR on exactly the given nodes (default: the six cluster nodes, not the mirror).

        Each MONITOR has answered +OK before the window opens; a node that is down makes
        the capture fail, so a test that stops a node captures only the others.
        """
        targets = list(nodes) if nodes is not None else list(self.nodes)
        auth = self._auth()
        prelude = [["AUTH", auth["username"], auth["password"]]] if auth.get("password") else []
        capture = MonitorCapture(
            targets,
            address=self._access.address,
            replication_sources={n.address for n in (*self.nodes, *self.spares)},
            send=lambda node, marker: self.client(node).echo(marker),
            prelude=prelude,
        )
        self.captures.append(capture)
        return capture

    def cluster_slots_topology(self) -> Topology:
        """The topology as the cluster reports it now (CLUSTER SLOTS on the first node that
        answers; a node that is down or frozen is skipped)."""
        names = {n.address: n.name for n in (*self.nodes, *self.spares)}
        errors = []
        for node in self.nodes:
            try:
                reply = self._quick_client(node).execute_command("CLUSTER", "SLOTS",
                                                                 NEVER_DECODE=True)
            except (redis.RedisError, OSError) as exc:
                errors.append(f"{node.name}: {exc}")
                continue
            return from_cluster_slots(reply, lambda h, p: names.get(f"{h}:{p}", f"{h}:{p}"))
        raise redis.ConnectionError("no node answered CLUSTER SLOTS: " + "; ".join(errors))

    def _quick_client(self, node: Node) -> redis.Redis:
        """A client with a short timeout, for asking around (a frozen node must not stall)."""
        key = (f"quick:{node.name}", False)
        if key not in self._clients:
            host, port = self._access.address(node)
            auth = self._auth()
            self._clients[key] = redis.Redis(host, port, socket_timeout=1,
                                             socket_connect_timeout=1, protocol=2,
                                             username=auth.get("username"),
                                             password=auth.get("password"))
        return self._clients[key]

    def proxy_hosts(self) -> dict[str, str]:
        """The proxy's view: {"ip:port": health} of the redis cluster, from Envoy's admin."""
        return parse_hosts(self.admin(CLUSTERS_JSON), model.PROXY_CLUSTER)

    def admin(self, path: str) -> str:
        return self._access.admin_get(path)

    def worker_connections(self) -> dict[int, int]:
        """{Envoy worker: connections its listener of the proxy's port accepted so far}."""
        return parse_worker_connections(self.admin(WORKER_CONNECTIONS),
                                        self.state.proxy.port)

    def wait_replicated(self, master: Node, timeout_ms: int = 5000) -> int:
        """Until every replica of `master` processed every write the master took so far, from
        any client (the proxy's included); returns how many did by then (0 on timeout).

        Not `WAIT`: WAIT waits only for the writes of the connection that sends it (the
        client's own replication offset), and this one wrote nothing, so WAIT would return at
        once, before the proxy's last write reached the replica (a read policy test then reads
        a stale replica, now and then).
        """
        with waits.waiting(waits.REPLICATION):
            return self._wait_replicated(master, timeout_ms)

    def _wait_replicated(self, master: Node, timeout_ms: int) -> int:
        client = self.client(master)
        info = client.info("replication")
        target = int(info["master_repl_offset"])
        deadline = time.monotonic() + timeout_ms / 1000
        by_address = {n.address: n for n in (*self.nodes, *self.spares)}
        hidden: list[Node] | None = None
        while True:
            links = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            nodes = [by_address.get(f"{link.get('ip')}:{link.get('port')}") for link in links]
            if None in nodes:
                # an inbound sidecar hides where a replica connects from (Istio: 127.0.0.6):
                # its master's own CLUSTER SLOTS says which replicas those links are
                if hidden is None:
                    hidden = [n for n in self._replicas_of(client, master, by_address)
                              if n not in nodes]
                if len(hidden) == nodes.count(None):
                    found = iter(hidden)
                    nodes = [n if n is not None else next(found) for n in nodes]
            done = 0
            for link, node in zip(links, nodes, strict=True):  # the replicas fed now (INFO)
                # a replica the lab knows is asked what it processed; another (an address
                # this side cannot map) counts by the offset it last acknowledged (its
                # REPLCONF ACK, once a second)
                offset = (self._processed_offset(node) if node is not None
                          else int(link.get("offset", -1)))
                done += offset >= target
            if (links and done == len(links)) or time.monotonic() >= deadline:
                return done
            time.sleep(0.002)  # polling the offsets; replication on a lab takes microseconds
            info = client.info("replication")

    @staticmethod
    def _replicas_of(client: redis.Redis, master: Node,
                     by_address: dict[str, Node]) -> list[Node]:
        """The replicas of `master` that its own CLUSTER SLOTS lists and the lab knows."""
        reply = client.execute_command("CLUSTER", "SLOTS", NEVER_DECODE=True)
        topology = from_cluster_slots(reply, lambda host, port: f"{host}:{port}")
        return [by_address[r.address] for shard in topology.shards
                if shard.master.address == master.address
                for r in shard.replicas if r.address in by_address]

    def _processed_offset(self, replica: Node) -> int:
        """The replication offset the replica has processed (-1 while its link is down)."""
        try:
            info = self._quick_client(replica).info("replication")
        except (redis.RedisError, OSError):
            return -1
        if info.get("master_link_status") != "up":
            return -1
        return int(info.get("slave_repl_offset", -1))

    # ---- diagnostics --------------------------------------------------------------------------
    def diagnostics(self) -> dict[str, str]:
        """Everything worth attaching to a failure: Envoy config/clusters/stats, nodes, logs."""
        found: dict[str, str] = {}
        for label, path in (("envoy-config_dump.json", "/config_dump"),
                            ("envoy-clusters.txt", "/clusters"),
                            ("envoy-redis-stats.txt", "/stats?filter=redis")):
            try:
                found[label] = self.admin(path)
            except Exception as exc:
                found[label] = f"unavailable: {exc}"
        nodes = []
        for node in self.nodes:
            try:
                raw = self.client(node).execute_command("CLUSTER", "NODES")
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
            except Exception as exc:
                text = f"unavailable: {exc}"
            nodes.append(f"# {node.name} {node.address}\n{text}")
        found["cluster-nodes.txt"] = "\n".join(nodes)
        found["lab-state.json"] = json.dumps(self.state.to_json(), indent=2)
        with contextlib.suppress(Exception):
            for name, text in self._access.logs().items():
                found[f"log-{name}.txt"] = text[-50_000:]
        return found

    def close(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        for extra in self._extra:
            with contextlib.suppress(Exception):
                extra.close()
        self._extra.clear()
        for connection, stream in self._streams:
            with contextlib.suppress(Exception):
                stream.close()
            with contextlib.suppress(Exception):
                connection.disconnect()
        self._streams.clear()
        if self._proxy is not None:
            with contextlib.suppress(Exception):
                self._proxy.close()
            self._proxy = None
        self._access.close()


def _readonly_on_connect(connection: Any) -> None:
    connection.on_connect()
    connection.send_command("READONLY")
    reply = connection.read_response()
    if reply not in (b"OK", "OK", True):
        raise redis.ResponseError(f"READONLY refused: {reply!r}")
