"""A lab's state: what `up` started and where, saved as .lab/<name>/state.json.

The backend-neutral part (proxy, admin, mirror, topology, processes) is what `status`
prints and what the `Lab` handle is built from; `extra` holds a backend's own details.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab import paths
from lab.topology import Node, Topology

STATE_FILE = "state.json"


@dataclass
class Process:
    name: str
    pid: int
    expect: str  # a piece of its command line: never signal a pid that is not ours


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
    # Seam 1: the extra EnvoyFilters (paths) of a mutant lab; empty = as the manifests say.
    envoyfilters: list[str] = field(default_factory=list)

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
        data = asdict(self)
        data["processes"] = [{"name": p.name, "pid": p.pid} for p in self.processes]
        return data

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        tmp = self.directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.directory / STATE_FILE)

    @classmethod
    def load(cls, name: str) -> LabState | None:
        path = paths.lab_dir(name) / STATE_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        data["processes"] = [Process(**p) for p in data.get("processes", [])]
        return cls(**data)


def all_states() -> list[LabState]:
    root = paths.home()
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if (child / STATE_FILE).is_file():
            state = LabState.load(child.name)
            if state:
                found.append(state)
    return found
