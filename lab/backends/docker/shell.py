"""`redis-mesh-lab cli` on a docker lab: redis-cli run inside the lab, as the tutorial does.

Without `--node`: `docker exec redis-client redis-cli -h redis-cluster ...` (the captured
path, through the sidecar). With `--node`: redis-cli inside that node's container, as the
lab's admin user (the password goes through the exec's environment, not its argv).
"""

from __future__ import annotations

import shutil
import sys

from lab import acl, model
from lab.errors import LabError
from lab.state import LabState

from .pods import CLIENT_POD


def redis_cli_argv(state: LabState, node: str | None, rest: list[str]) -> list[str]:
    docker = shutil.which("docker")
    if not docker:
        raise LabError("the docker command is not installed (apt-get install docker.io)")
    containers = dict(state.docker_facts().containers)
    tty = ["-it"] if sys.stdin.isatty() and sys.stdout.isatty() else ["-i"]
    if node is None:
        return [docker, "exec", *tty, containers[CLIENT_POD], "redis-cli", "-h",
                model.CLIENT_SERVICE, *rest]
    if node not in containers or node == CLIENT_POD:
        valid = [n for n in containers if n.startswith(("redis-cluster-", "redis-mirror"))]
        raise LabError(f"lab {state.name!r} has no node {node!r}; valid: {', '.join(valid)}")
    credentials = acl.load(state.directory)
    return [docker, "exec", *tty, "-e", "REDISCLI_AUTH", containers[node], "redis-cli",
            *credentials.cli_args(), *rest]
