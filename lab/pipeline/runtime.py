"""What a backend supplies: a runtime (its infrastructure primitives), as typed protocols.

`Runtime` is the backend's side of a lab's whole life (refusals before anything is created,
finding and stopping what a lab left, access, reconfiguring). `Build` is one `up` in
progress: one method per stage of lab.pipeline.stages, each doing that stage its own way
(processes, containers, Kubernetes objects), and the probes the pipeline polls. Adding a
backend means implementing these two and nothing else (tests/test_pipeline.py does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis

from lab.backends.base import Access, UpOptions
from lab.model import LabSpec
from lab.progress import Progress
from lab.state import LabState
from lab.topology import Topology

from .stages import StageKey


@dataclass(frozen=True)
class ProxyProof:
    """How the pipeline reaches the proxy to prove it: its config_dump, the client's
    listener, a client as the application connects, where that is (for messages)."""

    config_dump: Callable[[], str]
    listener: str
    client: Callable[[], redis.Redis]
    where: str
    through: str = ""


class Build(Protocol):
    """One `up` of one lab, stage by stage. The pipeline calls the methods in the order of
    lab.pipeline.stages.UP, polls the probes (a reason while not yet, None once it holds;
    LabError when it never will) and, after a failure, `diagnostics` and `close`."""

    poll_interval: float  # seconds between two probes

    def sleep(self, seconds: float) -> None:
        """The pause between two probes (time.sleep; a test's may return at once)."""
        ...

    def render(self) -> LabSpec: ...
    def prepare(self) -> None: ...
    def start_control_plane(self) -> None: ...
    def start_nodes(self) -> None: ...
    def nodes_not_ready(self) -> str | None: ...
    def create_cluster(self) -> None: ...
    def cluster_not_converged(self) -> str | None: ...
    def start_proxy(self) -> None: ...
    def proxy_not_ready(self) -> str | None: ...
    def check_control_plane(self) -> None: ...
    def topology(self) -> Topology: ...
    def proof(self) -> ProxyProof | None:
        """None: this runtime proves the proxy in its proxy wait (Kubernetes)."""
        ...

    def finish(self) -> None:
        """Record the lab's endpoints and facts in the journal (the pipeline saves it)."""
        ...

    def diagnostics(self, dest: Path) -> Path | None:
        """After a failed stage: a bundle of what the lab's parts said (None: nothing was
        created worth reading)."""
        ...

    def undo(self) -> bool:
        """After a failure: remove what this `up` created; False when some of it could not
        be removed (the lab's directory is then kept: it holds what cleaning up needs)."""
        ...

    def close(self) -> None:
        """Release what the build held (port holds, API clients), failed or not."""
        ...


class BuildBase:
    """What builds that run on this machine's clock share: what `up` was asked, its journal,
    the pause between probes, and the lab model their render stage sets."""

    poll_interval = 0.05
    _spec: LabSpec | None = None

    def __init__(self, options: UpOptions, journal: LabState, progress: Progress) -> None:
        self.options = options
        self.journal = journal
        self.progress = progress
        self.directory = journal.directory

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    @property
    def spec(self) -> LabSpec:
        assert self._spec is not None, "render first"
        return self._spec


class Runtime(Protocol):
    name: str
    # how many variant labs (lab.conformance.variants) may be up beside the session lab:
    # None, no limit; 0, none (the backend holds one lab per cluster)
    variant_capacity: int | None

    @property
    def timeouts(self) -> Mapping[StageKey, float]:
        """A stage's timeout where the default (lab.pipeline.stages) does not fit."""
        ...

    def header(self, options: UpOptions) -> list[str]:
        """The first lines of `up --dry-run`: where the lab lives, what it is built from."""
        ...

    def describe(self, key: StageKey, options: UpOptions) -> list[str]:
        """How this runtime carries out a stage (its commands, files, objects), for
        `up --dry-run`; [] when it has nothing to do in that stage."""
        ...

    def preflight(self, options: UpOptions) -> None:
        """Refuse, in one line, what cannot work, before anything is created."""
        ...

    def build(self, options: UpOptions, journal: LabState, progress: Progress) -> Build: ...

    def running(self, state: LabState) -> bool:
        """Whether a lab recorded as ready still runs (else its remains are cleared)."""
        ...

    def leftovers(self, name: str) -> bool:
        """Whether anything of a lab with no state is left (labels, containers, a cluster)."""
        ...

    def stop(self, name: str, state: LabState | None, progress: Progress) -> bool:
        """Stop and remove the lab's processes, containers or cluster: from its state and,
        without one, found by the lab's name and labels; False if nothing was found."""
        ...

    def access(self, state: LabState) -> Access: ...

    def reconfigure(self, name: str, envoyfilters: Sequence[Path | str],
                    progress: Progress) -> LabState:
        """Swap a running lab's extra EnvoyFilters; restart or resync only its proxy."""
        ...
