"""istiod's input, derived from the lab model: what Kubernetes would have told it.

With no Kubernetes, istiod's service registry is made of ServiceEntries and WorkloadEntries:
one ServiceEntry per Service of the manifests (its host, its VIP, its ports, MESH_INTERNAL,
STATIC endpoints selected by the Service's selector) and one WorkloadEntry per pod (the
pod template's labels, the pod's address). The EnvoyFilters are the documents the
Kubernetes path applies, as rendered by the lab model (only ${REDIS_VIP} and ${READ_POLICY}
filled in), then any extra EnvoyFilters of a mutant lab, in that order.

One addition the Kubernetes path does not have: the client's Sidecar. Without iptables the
client connects to the Service VIP itself, so its Envoy runs with INTERCEPTION_MODE NONE and
a Sidecar whose egress listeners bind each Service port on the Service's VIP. Istio names
such a listener `<bind>_<port>`, which is `<VIP>_<port>`: the name the EnvoyFilters match,
the same as the captured listener of a Kubernetes sidecar.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lab.errors import ManifestError
from lab.manifests import Document
from lab.model import CLIENT_SERVICE, LabSpec, combine_envoyfilters

ROOT_NAMESPACE = "istio-system"
CLIENT = "redis-client"
CLUSTER_ID = "Kubernetes"
NETWORKING = "networking.istio.io/v1"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]


def pods(spec: LabSpec) -> list[Pod]:
    """Every pod the manifests would create (StatefulSet ordinals, one per Deployment)."""
    found: list[Pod] = []
    for manifest in spec.k8s:
        for doc in manifest.documents:
            kind = doc.get("kind")
            if kind not in ("StatefulSet", "Deployment"):
                continue
            meta = doc["metadata"]
            namespace = meta.get("namespace", "default")
            template = doc["spec"]["template"]
            labels = dict(template.get("metadata", {}).get("labels", {}))
            if kind == "StatefulSet":
                for ordinal in range(int(doc["spec"].get("replicas", 1))):
                    name = f"{meta['name']}-{ordinal}"
                    found.append(Pod(name, namespace, labels | {
                        "statefulset.kubernetes.io/pod-name": name}))
            else:
                found.append(Pod(meta["name"], namespace, labels))
    return found


def service_entries(spec: LabSpec, vips: Mapping[str, str]) -> list[Document]:
    entries: list[Document] = []
    for service in spec.services:
        entry: dict[str, Any] = {
            "hosts": [service.fqdn],
            "ports": [{"number": p.port, "targetPort": p.target_port, "protocol": "TCP",
                       "name": p.name or f"tcp-{p.port}"} for p in service.ports],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "workloadSelector": {"labels": dict(service.selector)},
        }
        if not service.headless:
            entry["addresses"] = [vips[service.name]]
        entries.append({"apiVersion": NETWORKING, "kind": "ServiceEntry",
                        "metadata": {"name": service.name, "namespace": service.namespace},
                        "spec": entry})
    return entries


def workload_entries(spec: LabSpec, addresses: Mapping[str, str]) -> list[Document]:
    return [{"apiVersion": NETWORKING, "kind": "WorkloadEntry",
             "metadata": {"name": pod.name, "namespace": pod.namespace},
             "spec": {"address": addresses[pod.name], "labels": dict(pod.labels)}}
            for pod in pods(spec) if pod.name in addresses]


def client_sidecar(spec: LabSpec, vips: Mapping[str, str]) -> Document:
    """Egress listeners bound on Service VIPs (captureMode NONE): `<VIP>_<port>`.

    Istio wants the ports of port-bound egress listeners unique whatever their bind, so the
    client Service (redis-cluster) gets one listener per port on its VIP, and the other
    routed Service (redis-mirror, also on 6379) the catch-all listener bound on its VIP,
    which binds that VIP on each of its ports.
    """
    client = next(p for p in pods(spec) if p.name == CLIENT)
    routed = [s for s in spec.services if not s.headless]
    main = next(s for s in routed if s.name == CLIENT_SERVICE)
    others = [s for s in routed if s is not main]
    if len(others) > 1:
        raise ManifestError(f"istiod mode binds one Service besides {CLIENT_SERVICE} on its "
                            f"VIP; the manifests route {', '.join(s.name for s in others)}")
    egress: list[dict[str, Any]] = [
        {"port": {"number": port.port, "protocol": "TCP", "name": port.name or f"tcp-{port.port}"},
         "bind": vips[main.name], "captureMode": "NONE",
         "hosts": [f"{main.namespace}/{main.fqdn}"]}
        for port in main.ports
    ]
    egress += [{"bind": vips[other.name], "captureMode": "NONE",
                "hosts": [f"{other.namespace}/{other.fqdn}"]} for other in others]
    return {"apiVersion": NETWORKING, "kind": "Sidecar",
            "metadata": {"name": CLIENT, "namespace": client.namespace},
            "spec": {"workloadSelector": {"labels": dict(client.labels)}, "egress": egress}}


def mesh_config() -> dict[str, Any]:
    """Root namespace istio-system, no auto-mTLS, no telemetry, no tracing."""
    return {
        "rootNamespace": ROOT_NAMESPACE,
        "enableAutoMtls": False,
        "enableTracing": False,
        "enablePrometheusMerge": False,
        "accessLogFile": "",
        "defaultProviders": {"metrics": [], "tracing": [], "accessLogging": []},
        "outboundTrafficPolicy": {"mode": "ALLOW_ANY"},
        "defaultConfig": {"holdApplicationUntilProxyStarts": False},
    }


APPLIED_AT = "2026-01-01T00:00:{:02d}Z"


def envoyfilters(spec: LabSpec, extra: Sequence[Document] = ()) -> list[Document]:
    """The lab's EnvoyFilters as the Kubernetes path applies them, then the extra ones.

    Istio orders EnvoyFilters of equal priority by creation time, then name. Files have no
    creation time, so each document gets the one `kubectl apply` in this order would give
    it (one second apart), unless it says its own: otherwise istiod would order by name.
    """
    docs = [copy.deepcopy(doc) for doc in combine_envoyfilters(spec.all_envoyfilter_documents,
                                                                extra)]
    for index, doc in enumerate(docs):
        doc.setdefault("metadata", {}).setdefault("creationTimestamp", APPLIED_AT.format(index))
    return docs


def documents(spec: LabSpec, vips: Mapping[str, str], addresses: Mapping[str, str],
              extra_envoyfilters: Sequence[Document] = (), *,
              interception: str = "NONE") -> list[Document]:
    """istiod's inputs. `interception` "REDIRECT" (iptables capture, as on Kubernetes and the
    docker backend) needs no Sidecar: istiod's default listeners are the captured ones."""
    sidecar = [client_sidecar(spec, vips)] if interception == "NONE" else [plaintext_mesh()]
    return [*service_entries(spec, vips), *workload_entries(spec, addresses),
            *sidecar, *envoyfilters(spec, extra_envoyfilters)]


def plaintext_mesh() -> Document:
    """Mesh-wide PeerAuthentication DISABLE. A captured sidecar's virtualInbound would
    otherwise carry mTLS filter chains whose certificates (SDS `default`, `ROOTCA`) only
    pilot-agent serves; Envoy holds every listener warming until they come, i.e. forever."""
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": ROOT_NAMESPACE},
            "spec": {"mtls": {"mode": "DISABLE"}}}


def to_yaml(docs: Sequence[Document]) -> str:
    """YAML documents written as JSON: istiod reads YAML 1.1, where an unquoted `y` or `n`
    (PyYAML leaves them unquoted) is a bool; JSON quotes every string."""
    return "".join(f"---\n{json.dumps(doc, indent=1)}\n" for doc in docs)


def node_id(client_ip: str, namespace: str = "redis") -> str:
    return f"sidecar~{client_ip}~{CLIENT}.{namespace}~{namespace}.svc.cluster.local"


def node_metadata(spec: LabSpec, client_ip: str, istio_version: str,
                  interception: str = "NONE") -> dict[str, Any]:
    """The metadata istiod reads from a sidecar's node (what pilot-agent would send)."""
    client = next(p for p in pods(spec) if p.name == CLIENT)
    return {
        "NAMESPACE": client.namespace,
        "LABELS": dict(client.labels),
        "ISTIO_VERSION": istio_version,
        "INSTANCE_IPS": client_ip,
        "CLUSTER_ID": CLUSTER_ID,
        "INTERCEPTION_MODE": interception,
        "NAME": client.name,
        "WORKLOAD_NAME": client.name,
        "SERVICE_ACCOUNT": "default",
        "MESH_ID": "cluster.local",
    }
