"""The client pod's sidecar: Envoy's bootstrap in Istio's capture shape, and the capture rules.

The configuration is what the builtin control plane makes of the manifests (the baseline
built from the Services, with the Services' endpoints at the containers' IPs), turned into
the capture shape, then patched by the lab's EnvoyFilters exactly as written: the seeds
`redis-cluster-N.redis-cluster-headless.redis.svc.cluster.local` are resolved by Envoy
through the engine's DNS, nothing is rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lab import model
from lab.envoy import baseline, patcher
from lab.model import LabSpec, Service

from .images import ENVOY_UID

CONFIG_DIR = "/etc/istio/proxy"  # in the sidecar container; a directory of the lab dir
CONFIG_FILE = "envoy.json"
ADMIN_SOCKET = "admin.sock"

Address = tuple[str, int]


def config(spec: LabSpec, vips: Mapping[str, str], pods: Sequence[str],
           mirror: str) -> dict[str, list[dict[str, Any]]]:
    """Listeners and clusters: the Services' baseline, capture shape, then the lab's
    EnvoyFilters and the extra ones (a mutant lab's), in that order."""

    def endpoints(service: Service, port: int) -> list[Address]:
        if service.name == model.MIRROR_SERVICE:
            return [(mirror, port)]
        return [(ip, port) for ip in pods]

    def bind(service: Service, port: int) -> Address:
        return vips[service.name], port

    base = baseline.with_capture(baseline.build(spec.services, vips, endpoints, bind))
    return patcher.apply_envoyfilters(base, spec.all_envoyfilter_documents)


def bootstrap(listeners_and_clusters: dict[str, list[dict[str, Any]]],
              pod_ip: str) -> dict[str, Any]:
    return {
        "node": {"id": f"sidecar~{pod_ip}~redis-client.redis~redis.svc.cluster.local",
                 "cluster": "redis-client.redis"},
        # Admin on a Unix socket in a directory of the lab dir: nothing listens on TCP.
        "admin": {"address": {"pipe": {"path": f"{CONFIG_DIR}/{ADMIN_SOCKET}", "mode": 0o600}}},
        "static_resources": listeners_and_clusters,
    }


def capture_rules(proxy_uid: int = ENVOY_UID,
                  port: int = baseline.OUTBOUND_CAPTURE_PORT) -> str:
    """istio-init's nat rules for outbound TCP (iptables-restore --noflush input).

    Everything the pod sends over TCP goes to Envoy's outbound port, except Envoy's own
    traffic (its uid/gid) and loopback. --noflush keeps the engine's own DNS rules.
    """
    return "\n".join([
        "*nat",
        ":ISTIO_REDIRECT - [0:0]",
        ":ISTIO_OUTPUT - [0:0]",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {port}",
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
        "-A ISTIO_OUTPUT -o lo -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --uid-owner {proxy_uid} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --gid-owner {proxy_uid} -j RETURN",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        "COMMIT",
        "",
    ])
