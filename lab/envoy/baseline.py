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


# ---- The sidecar's capture shape (used by the docker backend; `build` is unchanged) ----------
# With iptables capture, Istio binds one listener, `virtualOutbound` on 15001; it hands each
# redirected connection to the listener of its original destination (`<VIP>_<port>`, which
# binds no port of its own), or to PassthroughCluster when there is none.

VIRTUAL_OUTBOUND = "virtualOutbound"
OUTBOUND_CAPTURE_PORT = 15001
PASSTHROUGH_CLUSTER = "PassthroughCluster"
ORIGINAL_DST_FILTER = "envoy.filters.listener.original_dst"
ORIGINAL_DST_TYPE = ("type.googleapis.com/"
                     "envoy.extensions.filters.listener.original_dst.v3.OriginalDst")


def passthrough_cluster() -> dict[str, Any]:
    return {"name": PASSTHROUGH_CLUSTER, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "10s"}


def virtual_outbound_listener(port: int = OUTBOUND_CAPTURE_PORT) -> dict[str, Any]:
    return {
        "name": VIRTUAL_OUTBOUND,
        "address": socket_address("0.0.0.0", port),
        "use_original_dst": True,
        "traffic_direction": "OUTBOUND",
        "listener_filters": [{"name": ORIGINAL_DST_FILTER,
                              "typed_config": {"@type": ORIGINAL_DST_TYPE}}],
        "filter_chains": [{
            "name": "virtualOutbound-catchall-tcp",
            "filters": [{"name": TCP_PROXY, "typed_config": {
                "@type": TCP_PROXY_TYPE, "stat_prefix": PASSTHROUGH_CLUSTER,
                "cluster": PASSTHROUGH_CLUSTER}}],
        }],
    }


def with_capture(config: dict[str, list[dict[str, Any]]],
                 port: int = OUTBOUND_CAPTURE_PORT) -> dict[str, list[dict[str, Any]]]:
    """`build`'s output in the capture shape: outbound listeners keep their `<VIP>_<port>`
    address but bind no port; `virtualOutbound` and PassthroughCluster are added."""
    listeners = [dict(listener, bind_to_port=False) for listener in config["listeners"]]
    return {"listeners": [virtual_outbound_listener(port), *listeners],
            "clusters": [*config["clusters"], passthrough_cluster()]}
