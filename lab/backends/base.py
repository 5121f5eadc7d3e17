"""What a backend is: it brings a lab up and down and tells how to reach its parts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lab.model import DEFAULT_READ_POLICY
from lab.progress import Progress
from lab.state import LabState
from lab.topology import Node


@dataclass(frozen=True)
class UpOptions:
    name: str = "default"
    read_policy: str = DEFAULT_READ_POLICY
    mirror: bool = True
    proxy_port: int | None = None  # local: the proxy's loopback port (free if None)
    istio: str = "modern"  # kind/existing: "modern" or "tutorial"
    kubeconfig: str | None = None  # existing: the cluster to use (never ~/.kube/config implicitly)
    context: str | None = None
    preload_images: bool = False  # kind: `kind load` the images (for offline use)
    dry_run: bool = False
    # Extra EnvoyFilter files applied after the lab's own (a mutant lab).
    envoyfilters: tuple[Path, ...] = ()
    keep: bool = False  # leave what a failed `up` created, for debugging (kind/existing)
    envoy_concurrency: int | None = None  # local: Envoy's --concurrency (None: Envoy's default)
    control_plane: str = "builtin"  # local: "builtin" (our patcher) or "istiod" (real istiod)
    # The StatefulSet scaled up by N after the cluster was created (`kubectl scale`): N more
    # redis pods, running and empty, not in the cluster until `redis-cli --cluster add-node`.
    spare_pods: int = 0
    images: str = "local"  # docker: "local" (built offline) or "upstream" (official, pulled)


class RedisLike(Protocol):
    """What the suites use of a client: redis-py's Redis satisfies it."""

    def execute_command(self, *args: object, **options: object) -> object: ...
    def close(self) -> None: ...


class Access(Protocol):
    """How the test process reaches a running lab's parts."""

    def proxy_client(self) -> RedisLike:
        """A client that talks to the cluster through the proxy, as the application does."""
        ...

    def proxy_cli(self, *args: str) -> list[str]:
        """The command line of redis-cli sending `args` through the proxy, run as the
        application would run it (on Kubernetes: in the client pod, as the tutorial does)."""
        ...

    def address(self, node: Node) -> tuple[str, int]:
        """Where the test process can open a TCP connection to `node` (or the mirror)."""
        ...

    def cluster_cli(self, *args: str) -> list[str]:
        """The command line of redis-cli for cluster management (`--cluster reshard ...`),
        run where every node's announced address is reachable (on Kubernetes: in
        redis-cluster-0, where the tutorial runs `--cluster create`)."""
        ...

    def cli_address(self, node: Node) -> str:
        """"host:port" of `node` as that redis-cli reaches it."""
        ...

    def admin_get(self, path: str) -> str:
        """GET a path of the proxy's Envoy admin API (e.g. /clusters, /config_dump)."""
        ...

    def logs(self) -> dict[str, str]:
        """The logs of the lab's processes or pods, by name."""
        ...

    def fault(self, node: Node, action: str) -> None:
        """Inject or revert a fault on one node or the mirror (one of FAULTS).

        kill (SIGKILL), stop (graceful), start (back with its data and nodes.conf), freeze /
        unfreeze (SIGSTOP / SIGCONT), isolate / reconnect (cut off from the other nodes and
        the proxy). A backend that cannot do one raises LabError saying why.
        """
        ...

    def close(self) -> None: ...


class DirectNodes:
    """Access's node addressing where the test process reaches every node as it announces
    itself (loopback, a docker network): redis-cli runs here too."""

    def address(self, node: Node) -> tuple[str, int]:
        return node.host, node.port

    def cluster_cli(self, *args: str) -> list[str]:
        from lab import binaries

        return [binaries.redis_cli(), *args]

    def cli_address(self, node: Node) -> str:
        return node.address


FAULTS = ("kill", "stop", "start", "freeze", "unfreeze", "isolate", "reconnect")


class Backend(Protocol):
    name: str
    # how many variant labs (lab.conformance.variants) may be up beside the session lab:
    # None, no limit; 0, none (the backend holds one lab per cluster)
    variant_capacity: int | None

    def dry_run(self, options: UpOptions) -> str:
        """The exact plan `up` would carry out, as text; changes nothing."""
        ...

    def up(self, options: UpOptions, progress: Progress) -> LabState: ...

    def down(self, name: str, progress: Progress) -> bool:
        """Stop and remove the lab; False if there was nothing to take down."""
        ...

    def access(self, state: LabState) -> Access: ...

    def reconfigure(self, name: str, envoyfilters: Sequence[Path | str],
                    progress: Progress) -> LabState:
        """Swap a running lab's extra EnvoyFilters and restart only its Envoy."""
        ...
