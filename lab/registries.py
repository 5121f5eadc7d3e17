"""Labs that run under another registry than the one in use.

A test run, a CI job or a shell with another $REDIS_MESH_LAB_HOME brings labs up in a registry
of its own; if it dies, its labs outlive it where `list` and `down` of the usual registry
never look. They are still found by what every lab leaves on the machine:

- each process a lab starts carries REDIS_MESH_LAB_ID=<registry>/<name> in its environment
  (only this user's processes are looked at);
- each container and network of a docker lab carries the label
  `redis-mesh-lab.home-path=<registry>` next to the lab's name.

`using(registry)` makes that registry the one in use for a block, so `down` of the backend
takes such a lab down exactly as from its own registry.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lab import paths, procs, settings
from lab.errors import LabError


@dataclass
class Elsewhere:
    """A lab found running under another registry."""

    registry: Path
    name: str
    pids: list[int] = field(default_factory=list)
    containers: int = 0
    networks: int = 0

    @property
    def backend(self) -> str:
        return "docker" if self.containers or self.networks else "local"


def _mine(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}").st_uid == os.getuid()
    except OSError:
        return False


def _labelled_processes() -> Iterator[tuple[Path, int]]:
    """(lab directory, pid) of every live process of this user carrying a lab's label."""
    for label, pid, _ in procs.labels():
        if os.path.isabs(label) and _mine(pid):
            yield Path(label), pid


def _docker_objects() -> Iterator[tuple[Path, str, str]]:
    """(registry, lab name, "container" | "network") of every labelled docker object;
    nothing when no engine answers."""
    if not (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")):
        return
    from lab.backends.docker import engine

    try:
        client = engine.connect()
    except LabError:
        return
    try:
        wanted = {"label": [engine.LABEL_HOME_PATH]}
        for kind, objects in (("container", client.containers.list(all=True, filters=wanted,
                                                                      ignore_removed=True)),
                              ("network", client.networks.list(filters=wanted))):
            for obj in objects:
                labels = obj.attrs.get("Labels") if kind == "network" else obj.labels
                home, name = (labels or {}).get(engine.LABEL_HOME_PATH), \
                    (labels or {}).get(engine.LABEL_LAB)
                if home and name and os.path.isabs(home):
                    yield Path(home), name, kind
    finally:
        client.close()


def elsewhere() -> list[Elsewhere]:
    """Every lab with a live process, container or network under another registry."""
    here = paths.home()
    found: dict[tuple[Path, str], Elsewhere] = {}

    def entry(registry: Path, name: str) -> Elsewhere | None:
        if registry == here:
            return None
        try:
            paths.check_name(name)
        except LabError:
            return None
        return found.setdefault((registry, name), Elsewhere(registry, name))

    for directory, pid in _labelled_processes():
        lab = entry(directory.parent, directory.name)
        if lab is not None:
            lab.pids.append(pid)
    for registry, name, kind in _docker_objects():
        lab = entry(registry, name)
        if lab is not None:
            if kind == "container":
                lab.containers += 1
            else:
                lab.networks += 1
    return sorted(found.values(), key=lambda lab: (str(lab.registry), lab.name))


@contextlib.contextmanager
def using(registry: Path) -> Iterator[None]:
    """`registry` is the registry in use within the block; if it had to be made (for the
    lock `down` takes) and is empty after, it is removed again."""
    existed = registry.exists()
    before = os.environ.get(settings.HOME.name)
    os.environ[settings.HOME.name] = str(registry)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(settings.HOME.name, None)
        else:
            os.environ[settings.HOME.name] = before
        if not existed:
            with contextlib.suppress(OSError):
                (registry / ".locks").rmdir()
                registry.rmdir()
