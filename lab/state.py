"""A lab's state, kept as a journal in <registry>/<name>/state.json.

The journal is written before the first process starts and rewritten (atomically) each
time a process starts, so an interrupted or killed `up` always leaves a record `down` can
clean up from. `phase` is "starting" until `up` finishes, then "ready".

The backend-neutral part (proxy, admin, mirror, topology, processes) is what `status`
prints and what the `Lab` handle is built from; `extra` holds a backend's own details.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab import paths
from lab.errors import LabError
from lab.topology import Node, Topology

STATE_FILE = "state.json"


@dataclass
class Process:
    name: str
    pid: int
    expect: str = ""  # kube port-forwards: a piece of its command line
    started: int = 0  # start time from /proc/<pid>/stat: a reused pid never matches
    argv: list[str] = field(default_factory=list)  # to start it again (fault "start")
    cwd: str = ""
    log: str = ""


class CorruptState(LabError):
    """A state.json that cannot be read; `down` still cleans up by the lab's label."""


@dataclass
class LabState:
    name: str
    backend: str
    read_policy: str
    mirror_enabled: bool
    proxy: dict[str, Any]
    admin: dict[str, Any]
    mirror: dict[str, Any]
    shards: list[dict[str, Any]] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    envoy_version: str = ""
    redis_version: str = ""
    istio_profile: str | None = None
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # The extra EnvoyFilters (paths) of a mutant lab; empty = as the manifests say.
    envoyfilters: list[str] = field(default_factory=list)
    phase: str = "ready"  # "starting" while `up` runs
    owner_pid: int = 0  # the `up` that wrote the journal

    @classmethod
    def starting(cls, name: str, backend: str, read_policy: str, mirror: bool) -> LabState:
        """The journal an `up` saves before it starts anything: phase "starting", owned by
        this process, so a `down` or the next `up` can clean up after a `kill -9`."""
        return cls(name=name, backend=backend, read_policy=read_policy, mirror_enabled=mirror,
                   proxy={}, admin={}, mirror={},
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
        return Node(name="redis-mirror", host=self.mirror["host"], port=int(self.mirror["port"]))

    def to_json(self) -> dict[str, Any]:
        """The public view (`status --json`, reports): camelCase, like conformance.yaml."""
        data = asdict(self)
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
            known = {f.name for f in dataclasses.fields(cls)}
            process_fields = {f.name for f in dataclasses.fields(Process)}
            data = {k: v for k, v in data.items() if k in known}
            data["processes"] = [Process(**{k: v for k, v in p.items() if k in process_fields})
                                 for p in data.get("processes", [])]
            state = cls(**data)
            if state.name != name:
                raise ValueError(f"it names lab {state.name!r}")
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise CorruptState(
                f"corrupt lab state {path} ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                f"redis-mesh-lab down --name {name} removes what the lab left"
            ) from None
        return state


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


_CAMEL = re.compile(r"_([a-z0-9])")


def camel(value: Any) -> Any:
    """snake_case keys to camelCase, recursively (values are left as they are)."""
    if isinstance(value, dict):
        return {(_CAMEL.sub(lambda m: m.group(1).upper(), k) if isinstance(k, str) else k):
                camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value
