"""The bootstrap of an Envoy configured only by istiod: ADS over plaintext gRPC.

What pilot-agent would write for a sidecar, reduced to what an upstream Envoy needs: the
node (id `sidecar~<IP>~<pod>.<ns>~<ns>.svc.cluster.local` and the metadata istiod reads),
the admin endpoint, one static cluster `xds-grpc` to istiod, LDS and CDS over ADS, and a
c-ares resolver pointed at the lab's DNS responder (the cluster DNS of Kubernetes).
"""

from __future__ import annotations

from typing import Any

CARES = "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
XDS_CLUSTER = "xds-grpc"


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def build(node_id: str, metadata: dict[str, Any], admin: str | tuple[str, int],
          istiod: tuple[str, int], dns: tuple[str, int]) -> dict[str, Any]:
    """`admin`: a Unix socket path (mode 0600) or a loopback (host, port)."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    admin_address = ({"pipe": {"path": admin, "mode": 0o600}} if isinstance(admin, str)
                     else _address(*admin))
    return {
        "node": {"id": node_id, "cluster": f"{metadata['NAME']}.{metadata['NAMESPACE']}",
                 "metadata": metadata},
        "admin": {"address": admin_address},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                           "set_node_on_first_message_only": True,
                           "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]},
            "lds_config": ads,
            "cds_config": ads,
        },
        "static_resources": {"clusters": [{
            "name": XDS_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": HTTP_OPTIONS,
                    "explicit_http_config": {"http2_protocol_options": {}},
                },
            },
            "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _address(*istiod)}}]}]},
        }]},
        "typed_dns_resolver_config": {
            "name": "envoy.network.dns_resolver.cares",
            "typed_config": {
                "@type": CARES,
                "resolvers": [_address(*dns)],
                "use_resolvers_as_fallback": False,
                "dns_resolver_options": {"no_default_search_domain": True},
            },
        },
    }
