"""A kube lab's EnvoyFilters: the lab's own plus a mutant's, and knowing istiod delivered them.

On Kubernetes the EnvoyFilters reach the client's sidecar through istiod, later and on its own
schedule. So every change of a lab's extra EnvoyFilters (`up --envoyfilter`, `reconfigure`)
ends with the *sync marker*: one more EnvoyFilter, for the client pod only, that adds an unused
cluster and an unused listener (it binds no port) both named for the change's generation
(`redis-mesh-lab-sync-<N>`). istiod builds a push from one snapshot of its configuration, and
its watch sees the EnvoyFilters in the order they were applied. So once the sidecar holds the
marker cluster and the active marker listener of generation N, its clusters and listeners come
from a push that had every EnvoyFilter applied before the marker. (Both are needed: istiod
sends no listeners when a change leaves them as they were.) The check does not look at the
redis proxy itself: a mutant that removes it must still be runnable, and is judged by the
suite.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lab.manifests import Document

from .layout import NAMESPACE

SYNC_NAME = "redis-mesh-lab-sync"


def identity(doc: Document) -> tuple[str, str]:
    meta = doc.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def stale(previous: Sequence[Document], wanted: Sequence[Document]) -> list[Document]:
    """The EnvoyFilters applied before that the new set no longer has (to delete)."""
    keep = {identity(d) for d in wanted}
    return [d for d in previous
            if d.get("kind") == "EnvoyFilter" and identity(d) not in keep
            and identity(d) != (NAMESPACE, SYNC_NAME)]


def marker_cluster(generation: int) -> str:
    return f"{SYNC_NAME}-{generation}"


def sync_marker(generation: int) -> Document:
    """The marker EnvoyFilter of `generation`: the client's sidecar gets one unused cluster and
    one listener that binds no port and leads to it."""
    name = marker_cluster(generation)
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": SYNC_NAME, "namespace": NAMESPACE},
        "spec": {
            "workloadSelector": {"labels": {"app": "redis-client"}},
            "configPatches": [
                {"applyTo": "CLUSTER", "match": {"context": "SIDECAR_OUTBOUND"},
                 "patch": {"operation": "ADD", "value": {
                     "name": name, "type": "STATIC", "connect_timeout": "1s",
                     "load_assignment": {"cluster_name": name, "endpoints": []}}}},
                {"applyTo": "LISTENER", "match": {"context": "SIDECAR_OUTBOUND"},
                 "patch": {"operation": "ADD", "value": {
                     "name": name, "bind_to_port": False,
                     "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
                     "filter_chains": [{"filters": [{
                         "name": "envoy.filters.network.tcp_proxy",
                         "typed_config": {
                             "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                      "tcp_proxy.v3.TcpProxy",
                             "stat_prefix": name, "cluster": name}}]}]}}},
            ],
        },
    }


def not_synced(config_dump: str, generation: int) -> str | None:
    """None once the sidecar's config_dump holds the marker cluster and the active marker
    listener of `generation`; else what is missing."""
    try:
        configs: list[dict[str, Any]] = json.loads(config_dump).get("configs", [])
    except (json.JSONDecodeError, AttributeError):
        return "the client sidecar's config_dump is not JSON"
    by_type = {str(c.get("@type", "")).rsplit(".", 1)[-1]: c for c in configs}
    clusters = {str((c.get("cluster") or {}).get("name", ""))
                for c in by_type.get("ClustersConfigDump", {}).get("dynamic_active_clusters", [])}
    listeners = {str(entry.get("name", ""))
                 for entry in by_type.get("ListenersConfigDump", {}).get("dynamic_listeners", [])
                 if "active_state" in entry}
    want = marker_cluster(generation)
    for what, have in (("cluster", clusters), ("active listener", listeners)):
        if want not in have:
            markers = sorted(n for n in have if n.startswith(SYNC_NAME)) or ["none"]
            return f"the client sidecar's sync marker {what}: {', '.join(markers)}, not {want}"
    return None
