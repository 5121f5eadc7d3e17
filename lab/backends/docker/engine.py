"""The Docker engine: connecting to it, naming and labelling what a lab creates.

Every container and network of a lab carries the labels `redis-mesh-lab.lab=<name>` and
`redis-mesh-lab.home=<hash of the lab home>`, so `down` finds everything even when the
state directory is gone, and two lab homes using the same lab name never touch each other.
`redis-mesh-lab.home-path=<the lab home>` lets `list` and `down --all` of another home find a
lab whose own home nobody looks at any more (a test run's, say: lab/registries.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from typing import Any

from lab import paths
from lab.errors import LabError

LABEL_LAB = "redis-mesh-lab.lab"
LABEL_HOME = "redis-mesh-lab.home"
LABEL_HOME_PATH = "redis-mesh-lab.home-path"
LABEL_ROLE = "redis-mesh-lab.role"
LABEL_INPUTS = "redis-mesh-lab.inputs"  # on images: the hash of what they were built from
INIT_ROLE = "istio-init"  # the init container: it exits once the capture is set up
COMPLETED = "completed"
LABEL_RUN = "redis-mesh-lab.run"  # the process that created it: a failed `up` removes its own
RUN_ID = uuid.uuid4().hex[:12]

HOW_TO_START = ("no Docker engine answers ({where}): start one with `dockerd &` (as root) "
                "or Docker Desktop, or point DOCKER_HOST at one")


def home_id() -> str:
    """A short, stable id of the lab home (REDIS_MESH_LAB_HOME)."""
    return hashlib.sha256(str(paths.home().resolve()).encode()).hexdigest()[:6]


def prefix(lab: str) -> str:
    """Container and network names of a lab start with this."""
    return f"rml-{home_id()}-{lab}"


def container_name(lab: str, pod: str) -> str:
    return f"{prefix(lab)}-{pod}"


def labels(lab: str, role: str) -> dict[str, str]:
    return {LABEL_LAB: lab, LABEL_HOME: home_id(), LABEL_HOME_PATH: str(paths.home()),
            LABEL_ROLE: role, LABEL_RUN: RUN_ID}


def label_filter(lab: str, this_run: bool = False) -> list[str]:
    """Everything of the lab; with `this_run`, only what this process created (a failed
    `up` must not remove what a concurrent `up` of the same name created)."""
    wanted = [f"{LABEL_LAB}={lab}", f"{LABEL_HOME}={home_id()}"]
    return [*wanted, f"{LABEL_RUN}={RUN_ID}"] if this_run else wanted


def configure_reaper(client: Any) -> bool:
    """testcontainers' reaper (ryuk) removes a session's containers when the session ends.

    A lab outlives the process that brought it up (`up`, then `pytest --lab-backend attach`),
    so the reaper must not own its containers; and its image cannot be pulled without a
    registry. It is disabled; the lab's labels are what `down` relies on. Returns whether
    the reaper's image is present (reported by `status`-like diagnostics only).
    """
    from testcontainers.core.config import testcontainers_config

    os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
    testcontainers_config.ryuk_disabled = True
    try:
        client.images.get(testcontainers_config.ryuk_image)
    except Exception:
        return False
    return True


def connect() -> Any:
    """A docker-py client of a live engine, or a one-line LabError saying how to start one."""
    import docker
    from docker.errors import DockerException

    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except (DockerException, OSError) as exc:
        raise LabError(HOW_TO_START.format(where=where)) from exc
    configure_reaper(client)
    return client


def available() -> str | None:
    """None if an engine answers, else the reason (for skipping tests)."""
    try:
        connect().close()
    except LabError as exc:
        return str(exc)
    return None


def leftovers(lab: str) -> bool:
    """Whether an engine answers and holds containers or networks of this lab."""
    try:
        client = connect()
    except LabError:
        return False
    try:
        wanted = {"label": label_filter(lab)}
        return bool(client.containers.list(all=True, filters=wanted, ignore_removed=True)
                    or client.networks.list(filters=wanted))
    finally:
        client.close()


def container_states(lab: str) -> dict[str, str]:
    """{container name: status ("running", "exited", ...)} of every container labelled with
    the lab, found by its labels alone (a killed `up` recorded none); {} with no engine.
    An init container that has done its job (exited 0) reads "completed", as Kubernetes
    shows one."""
    try:
        client = connect()
    except LabError:
        return {}
    try:
        wanted = {"label": label_filter(lab)}
        found = {}
        for container in client.containers.list(all=True, filters=wanted, ignore_removed=True):
            state = container.attrs.get("State") or {}
            done = (container.labels.get(LABEL_ROLE) == INIT_ROLE
                    and container.status == "exited" and state.get("ExitCode") == 0)
            found[container.name] = COMPLETED if done else container.status
        return found
    finally:
        client.close()


class Engine:
    """A client of the engine, connected on first use and closed once (a lab's access, an
    `up` in progress)."""

    def __init__(self) -> None:
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
