"""Compare what two control planes made of the EnvoyFilters, as Envoy holds it.

Both sides are read from Envoy's own /config_dump (the builtin's as static resources, istiod's
as dynamic ones), so Envoy's proto serialisation normalises durations, enum names and
defaults. Compared: the network filters of the `<VIP>_6379` listener and the
`custom-redis-cluster` cluster, field by field. Istio-specific additions (cluster/filter
metadata, istiod's version info) are dropped first; everything else must be equal.
"""

from __future__ import annotations

from typing import Any

from lab import model

# What istiod adds that the EnvoyFilters do not say (and Kubernetes would add as well).
ISTIO_SPECIFIC = ("metadata", "last_updated", "version_info")


def _items(config_dump: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Listeners or clusters of a /config_dump, static and dynamic (active or warming)."""
    key = kind[:-1]  # "listener" / "cluster"
    found: list[dict[str, Any]] = []
    for section in config_dump.get("configs", []):
        found += [item[key] for item in section.get(f"static_{kind}", []) if key in item]
        for item in section.get(f"dynamic_{kind}", []):  # listeners
            state = item.get("active_state") or item.get("warming_state") or {}
            if key in state:
                found.append(state[key])
        for bucket in (f"dynamic_active_{kind}", f"dynamic_warming_{kind}"):  # clusters
            found += [item[key] for item in section.get(bucket, []) if key in item]
    return found


def listener(config_dump: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((x for x in _items(config_dump, "listeners") if x.get("name") == name), None)


def cluster(config_dump: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((x for x in _items(config_dump, "clusters") if x.get("name") == name), None)


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in ISTIO_SPECIFIC}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def parts(config_dump: dict[str, Any], vip: str, port: int = 6379) -> dict[str, Any]:
    """What the EnvoyFilters decide: the listener's network filters and the redis cluster."""
    found = listener(config_dump, f"{vip}_{port}")
    filters = None if found is None else [
        f for chain in found.get("filter_chains", []) for f in chain.get("filters", [])]
    return {
        f"listener {vip}_{port} filters": _strip(filters),
        f"cluster {model.PROXY_CLUSTER}": _strip(cluster(config_dump, model.PROXY_CLUSTER)),
    }


def diff(left: Any, right: Any, path: str = "") -> list[str]:
    """Every difference, one line each: `path: left != right`."""
    if isinstance(left, dict) and isinstance(right, dict):
        lines: list[str] = []
        for key in sorted(set(left) | set(right)):
            where = f"{path}.{key}" if path else str(key)
            if key not in right:
                lines.append(f"{where}: only builtin has it ({left[key]!r})")
            elif key not in left:
                lines.append(f"{where}: only istiod has it ({right[key]!r})")
            else:
                lines += diff(left[key], right[key], where)
        return lines
    if isinstance(left, list) and isinstance(right, list):
        if len(left) != len(right):
            return [f"{path}: {len(left)} items (builtin) != {len(right)} (istiod): "
                    f"{left!r} != {right!r}"]
        return [line for i, (a, b) in enumerate(zip(left, right, strict=True))
                for line in diff(a, b, f"{path}[{i}]")]
    return [] if left == right else [f"{path}: builtin {left!r} != istiod {right!r}"]
