"""Istio's EnvoyFilter patch semantics, applied to a sidecar's listeners and clusters.

Covers what the lab's EnvoyFilters and their likely edits use: CLUSTER ADD / INSERT_FIRST /
MERGE / REMOVE / REPLACE, and NETWORK_FILTER ADD / INSERT_FIRST / INSERT_BEFORE /
INSERT_AFTER / MERGE / REMOVE / REPLACE, matched on context, listener name or port,
filter-chain name and filter name, cluster name / service / port.

One deliberate difference: Istio silently ignores a patch that matches nothing, which is
how this tutorial usually fails (an unrendered `${REDIS_VIP}`, a wrong filter name). Here
that is an error that says what was looked for and what exists.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from lab.errors import PatchError

Config = dict[str, list[dict[str, Any]]]
Patch = dict[str, Any]

OUTBOUND_CONTEXTS = (None, "ANY", "SIDECAR_OUTBOUND")


# proto3 merge copies only fields that are set, and an enum at its zero value is not set:
# MERGE `read_policy: MASTER` leaves the filter's read_policy as it was (what istiod does,
# found by tests/test_controlplane_diff.py). The enum fields the lab's filters use, by name.
PROTO3_ENUM_ZEROS = {
    "read_policy": "MASTER",
    "lb_policy": "ROUND_ROBIN",
    "dns_lookup_family": "AUTO",
    "traffic_direction": "UNSPECIFIED",
}


def merge(base: Any, overlay: Any) -> Any:
    """Protobuf merge: messages merge field by field, repeated fields append, scalars replace
    (an enum at its zero value is not set in proto3, so it replaces nothing)."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        if "@type" in base and "@type" in overlay and base["@type"] != overlay["@type"]:
            raise PatchError(
                f"MERGE of {overlay['@type']} into {base['@type']}: the types differ"
            )
        merged = dict(base)
        for key, value in overlay.items():
            if PROTO3_ENUM_ZEROS.get(key) == value:
                continue
            merged[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(overlay, list):
        return base + copy.deepcopy(overlay)
    return copy.deepcopy(overlay)


def _listener_port(listener: dict[str, Any]) -> int | None:
    """The Service port a sidecar listener stands for: the suffix of `<VIP>_<port>`."""
    name = listener.get("name", "")
    suffix = name.rsplit("_", 1)[-1]
    return int(suffix) if suffix.isdigit() else None


def _listener_matches(listener: dict[str, Any], match: dict[str, Any]) -> bool:
    if "name" in match and listener.get("name") != match["name"]:
        return False
    return "portNumber" not in match or _listener_port(listener) == int(match["portNumber"])


def _chain_matches(chain: dict[str, Any], match: dict[str, Any]) -> bool:
    return "name" not in match or chain.get("name") == match["name"]


def _cluster_matches(cluster: dict[str, Any], match: dict[str, Any]) -> bool:
    name = cluster.get("name", "")
    if "name" in match and name != match["name"]:
        return False
    parts = name.split("|")
    direction, port, subset, host = parts if len(parts) == 4 else ("", "", "", "")
    if direction != "outbound" and {"service", "portNumber", "subset"} & match.keys():
        return False
    if "service" in match and host != match["service"]:
        return False
    if "portNumber" in match and port != str(match["portNumber"]):
        return False
    return "subset" not in match or subset == match["subset"]


class _Patcher:
    def __init__(self, config: Config) -> None:
        self.config = copy.deepcopy(config)
        self.inserted: set[str] = set()  # clusters an EnvoyFilter added

    def apply(self, envoyfilter: dict[str, Any]) -> None:
        meta = envoyfilter.get("metadata", {})
        label = f"EnvoyFilter {meta.get('namespace', 'default')}/{meta.get('name', '?')}"
        for index, patch in enumerate(envoyfilter.get("spec", {}).get("configPatches", [])):
            where = f"{label} configPatches[{index}]"
            apply_to = patch.get("applyTo")
            operation = patch.get("patch", {}).get("operation")
            match = patch.get("match") or {}
            handlers: dict[str, Callable[[str, str, dict[str, Any], Any], int]] = {
                "CLUSTER": self._cluster,
                "NETWORK_FILTER": self._network_filter,
            }
            if apply_to not in handlers:
                raise PatchError(f"{where}: applyTo {apply_to} is not supported here")
            if match.get("context") not in OUTBOUND_CONTEXTS:
                raise PatchError(
                    f"{where}: matched nothing: context {match['context']} (the lab's sidecar "
                    "baseline has only SIDECAR_OUTBOUND configuration)"
                )
            value = patch.get("patch", {}).get("value")
            if handlers[apply_to](where, str(operation), match, value) == 0:
                raise PatchError(f"{where}: {apply_to} {operation} matched nothing; "
                                 + self._describe(apply_to, match))

    def _describe(self, apply_to: str, match: dict[str, Any]) -> str:
        if apply_to == "CLUSTER":
            names = [c.get("name") for c in self.config["clusters"]]
            return f"wanted {match.get('cluster', {})}, have clusters {names}"
        listeners = {
            lst.get("name"): [f.get("name") for ch in lst.get("filter_chains", [])
                              for f in ch.get("filters", [])]
            for lst in self.config["listeners"]
        }
        return f"wanted {match.get('listener', {})}, have listeners {listeners}"

    def _cluster(self, where: str, operation: str, match: dict[str, Any], value: Any) -> int:
        clusters = self.config["clusters"]
        if operation in ("ADD", "INSERT_FIRST"):
            if not isinstance(value, dict) or "name" not in value:
                raise PatchError(f"{where}: CLUSTER {operation} needs a value with a name")
            if any(c.get("name") == value["name"] for c in clusters):
                raise PatchError(f"{where}: a cluster named {value['name']!r} already exists")
            position = 0 if operation == "INSERT_FIRST" else len(clusters)
            clusters.insert(position, copy.deepcopy(value))
            self.inserted.add(str(value["name"]))
            return 1
        wanted = match.get("cluster", {})
        hits = [i for i, c in enumerate(clusters) if _cluster_matches(c, wanted)]
        added = [clusters[i].get("name") for i in hits if clusters[i].get("name") in self.inserted]
        if added:
            # Istio patches only the clusters it generates (EnvoyFilter-inserted ones are
            # added after every CLUSTER patch), so such a patch would silently change nothing.
            raise PatchError(
                f"{where}: CLUSTER {operation} of {', '.join(map(str, added))}, which an "
                "EnvoyFilter added: Istio patches only the clusters it generates, so this "
                "changes nothing there; edit (re-apply under its name) the EnvoyFilter that "
                "adds it instead")
        for i in reversed(hits):
            if operation == "REMOVE":
                del clusters[i]
            elif operation == "REPLACE":
                clusters[i] = copy.deepcopy(value)
            elif operation == "MERGE":
                clusters[i] = merge(clusters[i], value)
            else:
                raise PatchError(f"{where}: CLUSTER {operation} is not a cluster operation")
        return len(hits)

    def _network_filter(self, where: str, operation: str, match: dict[str, Any],
                        value: Any) -> int:
        listener_match = match.get("listener", {})
        chain_match = listener_match.get("filterChain", {})
        filter_name = chain_match.get("filter", {}).get("name")
        applied = 0
        for listener in self.config["listeners"]:
            if not _listener_matches(listener, listener_match):
                continue
            for chain in listener.get("filter_chains", []):
                if _chain_matches(chain, chain_match):
                    applied += self._on_chain(where, operation, chain, filter_name, value)
        return applied

    @staticmethod
    def _on_chain(where: str, operation: str, chain: dict[str, Any], filter_name: str | None,
                  value: Any) -> int:
        filters: list[dict[str, Any]] = chain.setdefault("filters", [])
        if operation == "ADD":
            filters.append(copy.deepcopy(value))
            return 1
        if operation == "INSERT_FIRST":
            if filter_name is not None and not any(f.get("name") == filter_name for f in filters):
                return 0
            filters.insert(0, copy.deepcopy(value))
            return 1
        positions = [i for i, f in enumerate(filters)
                     if filter_name is None or f.get("name") == filter_name]
        if operation in ("INSERT_BEFORE", "INSERT_AFTER") and filter_name is None:
            raise PatchError(f"{where}: {operation} needs match.listener.filterChain.filter.name")
        for i in reversed(positions):
            if operation == "REPLACE":
                filters[i] = copy.deepcopy(value)
            elif operation == "REMOVE":
                del filters[i]
            elif operation == "MERGE":
                filters[i] = merge(filters[i], value)
            elif operation == "INSERT_BEFORE":
                filters.insert(i, copy.deepcopy(value))
            elif operation == "INSERT_AFTER":
                filters.insert(i + 1, copy.deepcopy(value))
            else:
                raise PatchError(f"{where}: NETWORK_FILTER {operation} is not supported")
        return len(positions)


ROOT_NAMESPACE = "istio-system"


def istio_order(envoyfilters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Istio's order: `spec.priority` ascending, then the root namespace's filters first,
    then creation order (the order given here, as `kubectl apply` would create them)."""
    def key(item: tuple[int, dict[str, Any]]) -> tuple[int, int, int]:
        index, doc = item
        namespace = doc.get("metadata", {}).get("namespace", "default")
        return int(doc.get("spec", {}).get("priority", 0)), int(namespace != ROOT_NAMESPACE), index

    return [doc for _, doc in sorted(enumerate(envoyfilters), key=key)]


def apply_envoyfilters(config: Config, envoyfilters: list[dict[str, Any]]) -> Config:
    """Apply the EnvoyFilters in Istio's order (istio_order) to a copy of config."""
    patcher = _Patcher(config)
    for envoyfilter in istio_order(envoyfilters):
        patcher.apply(envoyfilter)
    return patcher.config
