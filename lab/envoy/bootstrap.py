"""The local Envoy's bootstrap: the patched sidecar config with cluster DNS names made local.

On Kubernetes, `redis-cluster-N.<headless>.redis.svc.cluster.local` resolves to pod N.
Here each such name becomes the loopback address of the local node with ordinal N, and a
Service FQDN the loopback address of the process behind it. A name with no local process
is an error, not a silent DNS failure inside Envoy.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from typing import Any

from lab.errors import PatchError

Address = tuple[str, int]
Resolver = Callable[[str, int], Address | None]


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def localize_endpoints(clusters: list[dict[str, Any]], resolve: Resolver) -> list[dict[str, Any]]:
    """Rewrite every endpoint hostname through `resolve(host, port) -> (ip, port)`."""
    result = copy.deepcopy(clusters)
    for cluster in result:
        for locality in cluster.get("load_assignment", {}).get("endpoints", []):
            for lb_endpoint in locality.get("lb_endpoints", []):
                sock = lb_endpoint.get("endpoint", {}).get("address", {}).get("socket_address")
                if not sock or _is_ip(sock.get("address", "")):
                    continue
                local = resolve(sock["address"], int(sock.get("port_value", 0)))
                if local is None:
                    raise PatchError(
                        f"cluster {cluster.get('name')}: endpoint {sock['address']}:"
                        f"{sock.get('port_value')} names nothing the lab runs"
                    )
                sock["address"], sock["port_value"] = local
    return result


def build(config: dict[str, list[dict[str, Any]]], admin: Address | str, node_id: str,
          resolve: Resolver) -> dict[str, Any]:
    """The bootstrap. `admin` is a Unix socket path (mode 0600) or a loopback address.

    Listeners never use SO_REUSEPORT: a port another process holds makes Envoy fail to
    bind instead of silently sharing (and splitting) the traffic. Without it, Envoy's workers
    share one accept socket and race for each connection: measured on a 2-worker lab, the
    busiest worker took from 50% to all of 50 new connections. So connections are dealt to
    the workers evenly (`exact_balance`; an EnvoyFilter that sets a balance keeps its own),
    as an Istio sidecar's SO_REUSEPORT listeners spread them by hash.
    """
    if isinstance(admin, str):
        admin_address: dict[str, Any] = {"pipe": {"path": admin, "mode": 0o600}}
    else:
        admin_address = {"socket_address": {"address": admin[0], "port_value": admin[1]}}
    listeners = copy.deepcopy(config["listeners"])
    for listener in listeners:
        listener["enable_reuse_port"] = False
        listener.setdefault("connection_balance_config", {"exact_balance": {}})
    return {
        "node": {"id": node_id, "cluster": "redis-client.redis"},
        "admin": {"address": admin_address},
        "static_resources": {
            "listeners": listeners,
            "clusters": localize_endpoints(config["clusters"], resolve),
        },
    }
