"""The failure bundle: kind's logs, pods, events, container logs, the client sidecar's
Envoy admin output and CLUSTER NODES. Best effort: a command that fails is noted, not fatal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .kubeapi import KubeApi
from .layout import ISTIO_NAMESPACE, NAMESPACE, Layout
from .plan import Arg
from .runner import Runner, short

_FILE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Item:
    filename: str
    argv: Sequence[Arg]


def items(layout: Layout, client_pod: str | None, redis_pods: Sequence[str],
          other_pods: Sequence[str], first_redis: str) -> list[Item]:
    k = layout.kubectl
    found: list[Item] = []
    if layout.cluster:
        found.append(Item("kind-export-logs.txt",
                          ["kind", "export", "logs", "{dest}/kind-logs", "--name", layout.cluster]))
    found += [
        Item("resources.txt", k("get", "all,envoyfilters,peerauthentications", "-A", "-o", "wide")),
        Item(f"describe-pods-{NAMESPACE}.txt", k("-n", NAMESPACE, "describe", "pods")),
        Item(f"describe-pods-{ISTIO_NAMESPACE}.txt", k("-n", ISTIO_NAMESPACE, "describe", "pods")),
        Item(f"events-{NAMESPACE}.txt",
             k("-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp")),
        Item(f"events-{ISTIO_NAMESPACE}.txt",
             k("-n", ISTIO_NAMESPACE, "get", "events", "--sort-by=.lastTimestamp")),
        Item("logs-istiod.txt", k("-n", ISTIO_NAMESPACE, "logs", "deploy/istiod",
                                  "--all-containers")),
    ]
    for pod in [*redis_pods, *other_pods]:
        found.append(Item(f"logs-{pod}.txt", k("-n", NAMESPACE, "logs", pod, "--all-containers",
                                               "--prefix")))
    if client_pod:
        for path in ("config_dump", "clusters", "stats"):
            found.append(Item(f"client-envoy-{path}.txt",
                              layout.admin_get(client_pod, path)))
    found.append(Item("cluster-nodes.txt",
                      layout.exec_in(first_redis, "redis", "redis-cli", "cluster", "nodes")))
    return found


def _pod_names(api: KubeApi | None) -> tuple[list[str], list[str]]:
    if api is None:
        return [], []
    try:
        pods = api.pods(NAMESPACE, "")
    except Exception:
        return [], []
    redis_pods = [p.name for p in pods if p.labels.get("app") == "redis-cluster"]
    return redis_pods, [p.name for p in pods if p.name not in redis_pods]


def collect(layout: Layout, runner: Runner, tools: dict[str, str], dest: Path, *,
            api: KubeApi | None = None, client_pod: str | None = None,
            first_redis: str = "redis-cluster-0") -> Path:
    """Write the bundle under `dest` (created); returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    redis_pods, others = _pod_names(api)
    if client_pod is None:
        client_pod = next((p for p in others if p.startswith("redis-client")), None)
    index = []
    for item in items(layout, client_pod, redis_pods, others, first_redis):
        argv = [str(a).replace("{dest}", str(dest)) for a in item.argv]
        argv[0] = tools.get(argv[0], argv[0])
        name = _FILE.sub("_", item.filename)
        try:
            result = runner.run(argv, check=False, timeout=120)
            output, code = result.stdout + result.stderr, str(result.returncode)
        except Exception as exc:
            output, code = f"{type(exc).__name__}: {exc}\n", "error"
        (dest / name).write_text(output, encoding="utf-8")
        index.append(f"{name}\texit {code}\t{short(argv, 40)}")
    (dest / "INDEX.txt").write_text("\n".join(index) + "\n", encoding="utf-8")
    return dest
