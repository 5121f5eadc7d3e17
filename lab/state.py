"""A lab's state, kept as a journal in <registry>/<name>/state.json.

The journal is written before the first process starts and rewritten (atomically) each
time a process starts, so an interrupted or killed `up` always leaves a record `down` can
clean up from. `phase` is "starting" until `up` finishes, then "ready".

The backend-neutral part (proxy, admin, mirror, topology, processes, the control plane) is
what `status` prints and what the `Lab` handle is built from; each backend keeps its own facts
in a dataclass of its own (`local`, `docker` or `kube`; the others are None). The file carries
`version`: a journal of another version is refused in one line, and `down` still cleans up.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lab import paths
from lab.errors import LabError
from lab.topology import Node, Topology

STATE_FILE = "state.json"
STATE_VERSION = 2  # 2: typed facts per backend (1 kept them in an untyped `extra`)


@dataclass
class Process:
    name: str
    pid: int
    expect: str = ""  # kube port-forwards: a piece of its command line
    started: int = 0  # start time from /proc/<pid>/stat: a reused pid never matches
    argv: list[str] = field(default_factory=list)  # to start it again (fault "start")
    cwd: str = ""
    log: str = ""


@dataclass
class ProxyEndpoint:
    """Where the redis proxy (the client's sidecar listener) is reached."""
    host: str = ""
    port: int = 0
    via: str = ""  # how an application in the lab reaches it (docker exec, kubectl exec)
    vip: str = ""  # the redis-cluster Service's cluster IP (docker, kind)


@dataclass
class AdminEndpoint:
    """Where the proxy's Envoy admin is reached."""
    socket: str = ""  # a unix socket (local, docker)
    via: str = ""  # kind: the command that reaches it
    pod: str = ""  # kind: the client pod whose sidecar it is


@dataclass
class MirrorEndpoint:
    host: str = ""
    port: int = 0
    pod: str = ""  # kind


@dataclass
class ControlPlaneFacts:
    """Who turned the EnvoyFilters into Envoy config."""
    name: str = "builtin"  # builtin (our patcher) | istiod
    description: str = ""  # for reports; "" = said from the backend (see Lab.implementation)
    istio_version: str = ""
    istio_build: str = ""
    istiod_http: str = ""  # host:port of istiod's debug endpoints
    proxy_id: str = ""  # the sidecar's node id at istiod
    loopback_block: int | None = None  # local: the third octet of the lab's 127.x block
    unmatched_envoyfilters: list[str] = field(default_factory=list)


@dataclass
class LocalPorts:
    nodes: list[int] = field(default_factory=list)
    mirror: int = 0
    proxy: int = 0


@dataclass
class LocalFacts:
    ports: LocalPorts = field(default_factory=LocalPorts)  # journaled before the nodes start
    names_by_address: dict[str, str] = field(default_factory=dict)
    vips: dict[str, str] = field(default_factory=dict)  # Service -> its cluster IP
    envoy_config: str = ""


@dataclass
class DockerFacts:
    network: str = ""
    subnet: str = ""
    images: dict[str, str] = field(default_factory=dict)
    ips: dict[str, str] = field(default_factory=dict)  # pod -> its IP
    containers: dict[str, str] = field(default_factory=dict)  # pod -> its container's name
    aliases: dict[str, list[str]] = field(default_factory=dict)  # pod -> its DNS names
    names_by_address: dict[str, str] = field(default_factory=dict)
    relay_socket: str = ""  # relative to the lab's directory
    admin_socket: str = ""  # relative to the lab's directory


@dataclass
class KubeFacts:
    kubeconfig: str = ""
    context: str | None = None
    cluster: str | None = None  # kind's cluster; None on an existing cluster
    namespace: str = "redis"
    client_pod: str = ""
    redis_pods: list[str] = field(default_factory=list)
    kind_version: str | None = None
    node_image: str | None = None
    applied: list[dict[str, Any]] = field(default_factory=list)  # objects: (kind, ns, name)
    sync_generation: int = 0  # the EnvoyFilter sync marker's last generation


class CorruptState(LabError):
    """A state.json that cannot be read; `down` still cleans up by the lab's label."""


@dataclass
class LabState:
    name: str
    backend: str
    read_policy: str
    mirror_enabled: bool
    proxy: ProxyEndpoint = field(default_factory=ProxyEndpoint)
    admin: AdminEndpoint = field(default_factory=AdminEndpoint)
    mirror: MirrorEndpoint = field(default_factory=MirrorEndpoint)
    shards: list[dict[str, Any]] = field(default_factory=list)  # Topology.to_list()
    spares: list[dict[str, Any]] = field(default_factory=list)  # Node.to_dict(): not in the cluster
    processes: list[Process] = field(default_factory=list)
    envoy_version: str = ""
    redis_version: str = ""
    istio_profile: str | None = None
    created: str = ""
    control_plane: ControlPlaneFacts = field(default_factory=ControlPlaneFacts)
    local: LocalFacts | None = None
    docker: DockerFacts | None = None
    kube: KubeFacts | None = None
    # The extra EnvoyFilters (paths) of a mutant lab; empty = as the manifests say.
    envoyfilters: list[str] = field(default_factory=list)
    phase: str = "ready"  # "starting" while `up` runs
    owner_pid: int = 0  # the `up` that wrote the journal
    version: int = STATE_VERSION

    @classmethod
    def starting(cls, name: str, backend: str, read_policy: str, mirror: bool) -> LabState:
        """The journal an `up` saves before it starts anything: phase "starting", owned by
        this process, so a `down` or the next `up` can clean up after a `kill -9`."""
        return cls(name=name, backend=backend, read_policy=read_policy, mirror_enabled=mirror,
                   created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                   phase="starting", owner_pid=os.getpid())

    @property
    def directory(self) -> Path:
        return paths.lab_dir(self.name)

    @property
    def topology(self) -> Topology:
        return Topology.from_list(self.shards)

    @property
    def mirror_node(self) -> Node:
        return Node(name="redis-mirror", host=self.mirror.host, port=self.mirror.port)

    @property
    def spare_nodes(self) -> list[Node]:
        return [Node(str(s["name"]), str(s["host"]), int(s["port"])) for s in self.spares]

    def local_facts(self) -> LocalFacts:
        """The local backend's facts (a LabError if the lab is not a local one)."""
        return _facts(self, self.local, "local")

    def docker_facts(self) -> DockerFacts:
        return _facts(self, self.docker, "docker")

    def kube_facts(self) -> KubeFacts:
        return _facts(self, self.kube, "kind or existing")

    def to_json(self) -> dict[str, Any]:
        """The public view (`status --json`, reports): camelCase, like conformance.yaml."""
        data = asdict(self)
        for part in ("proxy", "admin", "mirror"):  # what this backend has of each
            data[part] = {k: v for k, v in data[part].items() if v not in ("", None)}
        data["processes"] = [{"name": p.name, "pid": p.pid, "log": p.log}
                             for p in self.processes]
        return camel(data)

    def save(self) -> None:
        directory = self.directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = directory / (STATE_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, directory / STATE_FILE)

    @classmethod
    def load(cls, name: str) -> LabState | None:
        """The lab's state; None if there is none; CorruptState (one line) if unreadable."""
        path = paths.lab_dir(name) / STATE_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CorruptState(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(raw.decode("utf-8"))  # UnicodeDecodeError is a ValueError
            if not isinstance(data, dict):
                raise ValueError("it is not an object")
            if data.get("version", 1) != STATE_VERSION:  # 1 had no version field
                raise CorruptState(
                    f"corrupt lab state {path} (state version {data.get('version', 1)}, this "
                    f"redis-mesh-lab reads {STATE_VERSION}: written by another version?); "
                    f"redis-mesh-lab down --name {name} removes what the lab left")
            state = _build(cls, data)
            if state.name != name:
                raise ValueError(f"it names lab {state.name!r}")
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise CorruptState(
                f"corrupt lab state {path} ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                f"redis-mesh-lab down --name {name} removes what the lab left"
            ) from None
        return state


def recorded_backend(name: str) -> str | None:
    """The backend a lab's state.json names, even where the rest of it cannot be read (an
    older version's journal): `down` takes a kind lab's cluster down by it."""
    try:
        data = json.loads((paths.lab_dir(name) / STATE_FILE).read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    backend = data.get("backend") if isinstance(data, dict) else None
    return backend if isinstance(backend, str) else None


def all_states() -> list[LabState]:
    """Every readable lab state in the registry (corrupt ones are skipped; see `registry`)."""
    return [state for _, state, _ in registry() if state is not None]


def registry() -> list[tuple[str, LabState | None, str]]:
    """(name, state or None, problem) for every lab directory in the registry."""
    root = paths.home()
    if not root.is_dir():
        return []
    found: list[tuple[str, LabState | None, str]] = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        try:
            paths.check_name(child.name)
            state = LabState.load(child.name)
        except LabError as exc:
            found.append((child.name, None, str(exc)))
            continue
        if state is not None:
            found.append((child.name, state, ""))
        else:
            found.append((child.name, None, "no state.json"))
    return found


_T = TypeVar("_T")


def _facts(state: LabState, facts: _T | None, backend: str) -> _T:
    if facts is None:
        raise LabError(f"lab {state.name} is a {state.backend} lab, not a {backend} one")
    return facts


def _build(cls: type[_T], data: Any) -> _T:
    """A dataclass from its asdict() form: nested dataclasses (also optional ones and lists of
    them) are built field by field; keys the class does not have are dropped."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} expects an object, not {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            values[f.name] = _value(hints[f.name], data[f.name])
    return cls(**values)


def _value(hint: Any, value: Any) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union) and value is not None:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _value(inner[0], value)
    if origin is list and args and isinstance(args[0], type) \
            and dataclasses.is_dataclass(args[0]):
        return [_build(args[0], v) for v in value]
    return value


_CAMEL = re.compile(r"_([a-z0-9])")


def camel(value: Any) -> Any:
    """snake_case keys to camelCase, recursively (values are left as they are)."""
    if isinstance(value, dict):
        return {(_CAMEL.sub(lambda m: m.group(1).upper(), k) if isinstance(k, str) else k):
                camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value
