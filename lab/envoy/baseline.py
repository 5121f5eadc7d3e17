"""An Istio-shaped sidecar baseline built from the manifests' Services.

What pilot would push to a sidecar for the Services the lab defines, reduced to the parts
the EnvoyFilters touch: per Service port an outbound cluster
`outbound|<port>||<svc>.<ns>.svc.cluster.local` and an outbound listener `<VIP>_<port>`
whose only filter is `envoy.filters.network.tcp_proxy` to that cluster. Headless Services
get no VIP and so no listener, as in Istio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lab.model import Service

TCP_PROXY = "envoy.filters.network.tcp_proxy"
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

Address = tuple[str, int]


def socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def outbound_cluster(name: str, endpoints: list[Address]) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "10s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": socket_address(h, p)}}
                                  for h, p in endpoints]}
            ],
        },
    }


def outbound_listener(vip: str, port: int, cluster: str, bind: Address) -> dict[str, Any]:
    return {
        "name": f"{vip}_{port}",
        "address": socket_address(*bind),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": TCP_PROXY,
                        "typed_config": {
                            "@type": TCP_PROXY_TYPE,
                            "stat_prefix": cluster,
                            "cluster": cluster,
                        },
                    }
                ]
            }
        ],
    }


def build(
    services: tuple[Service, ...],
    vips: Mapping[str, str],
    endpoints: Callable[[Service, int], list[Address]],
    bind: Callable[[Service, int], Address],
) -> dict[str, list[dict[str, Any]]]:
    """The baseline's listeners and clusters.

    `vips` maps Service names to cluster IPs, `endpoints(service, port)` gives the
    addresses behind a Service port, `bind(service, port)` where its listener listens.
    """
    clusters: list[dict[str, Any]] = []
    listeners: list[dict[str, Any]] = []
    for service in services:
        for port in service.ports:
            name = service.outbound_cluster(port.port)
            clusters.append(outbound_cluster(name, endpoints(service, port.port)))
            if service.headless:
                continue
            listeners.append(
                outbound_listener(vips[service.name], port.port, name, bind(service, port.port))
            )
    return {"listeners": listeners, "clusters": clusters}
