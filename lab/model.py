"""The lab's model, derived from the manifests: what to run, what Envoy must look like.

The backends read this rather than the YAML: the StatefulSet (name, replicas, governing
Service), redis.conf, the Services (for the sidecar baseline) and the EnvoyFilters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import manifests, versions
from lab.errors import ManifestError
from lab.manifests import Document, Manifest

READ_POLICIES = ("MASTER", "PREFER_MASTER", "REPLICA", "PREFER_REPLICA", "ANY")
DEFAULT_READ_POLICY = "REPLICA"  # the tutorial's

K8S_FILES = (
    "k8s/namespace.yaml",
    "k8s/redis-cluster.yaml",
    "k8s/redis-client.yaml",
    "k8s/redis-mirror.yaml",
)
CLUSTER_FILTER = "istio/envoyfilter-custom-redis-cluster.yaml"
PROXY_FILTER = "istio/envoyfilter-redis-proxy.yaml"
PROXY_FILTER_WITH_MIRROR = "istio/envoyfilter-redis-proxy-with-mirror.yaml"
PEER_AUTHENTICATION = "istio/peer-authentication.yaml"
TUTORIAL_CRD = "istio/tutorial-1.7/envoyfilter-crd.yaml"

CLIENT_SERVICE = "redis-cluster"
MIRROR_SERVICE = "redis-mirror"
STATEFULSET = "redis-cluster"
REDIS_PORT = 6379
PROXY_CLUSTER = "custom-redis-cluster"  # the Envoy cluster the tutorial's EnvoyFilter adds


def envoyfilter_files(mirror: bool) -> tuple[str, ...]:
    return (CLUSTER_FILTER, PROXY_FILTER_WITH_MIRROR if mirror else PROXY_FILTER)


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    headless: bool
    ports: tuple[ServicePort, ...]
    selector: Mapping[str, str]

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"

    def outbound_cluster(self, port: int) -> str:
        """Istio's name for the sidecar's outbound cluster of this Service port."""
        return f"outbound|{port}||{self.fqdn}"


@dataclass(frozen=True)
class StatefulSet:
    name: str
    namespace: str
    replicas: int
    service_name: str
    image: str

    def pod(self, ordinal: int) -> str:
        return f"{self.name}-{ordinal}"

    def pod_fqdn(self, ordinal: int) -> str:
        return f"{self.pod(ordinal)}.{self.service_name}.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True)
class LabSpec:
    """Everything a backend needs to build the lab, rendered from the manifests."""

    read_policy: str
    mirror: bool
    statefulset: StatefulSet
    redis_conf: str
    services: tuple[Service, ...]
    k8s: tuple[Manifest, ...]
    envoyfilters: tuple[Manifest, ...]
    # Extra EnvoyFilters, layered after the lab's own (a "mutant lab" when not empty).
    extra_envoyfilters: tuple[Manifest, ...] = ()

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise ManifestError(f"no Service {name!r} in {', '.join(K8S_FILES)}")

    @property
    def envoyfilter_documents(self) -> list[Document]:
        """The lab's own EnvoyFilters, in order."""
        return manifests.by_kind(list(self.envoyfilters), "EnvoyFilter")

    @property
    def extra_envoyfilter_documents(self) -> list[Document]:
        return manifests.by_kind(list(self.extra_envoyfilters), "EnvoyFilter")

    @property
    def all_envoyfilter_documents(self) -> list[Document]:
        """What a control plane applies: the lab's own EnvoyFilters, then the extra ones."""
        return combine_envoyfilters(self.envoyfilter_documents, self.extra_envoyfilter_documents)


def _identity(doc: Document) -> tuple[str, str]:
    meta = doc.get("metadata") or {}
    return str(meta.get("namespace", "default")), str(meta.get("name", ""))


def combine_envoyfilters(own: Sequence[Document], extra: Sequence[Document]) -> list[Document]:
    """The EnvoyFilters a cluster would hold after `kubectl apply` of `own`, then `extra`.

    An extra EnvoyFilter with the namespace and name of an earlier one replaces it in place
    (the tutorial reconfigures `add-redis-proxy` exactly so); any other is added after.
    """
    combined = list(own)
    for doc in extra:
        same = [i for i, d in enumerate(combined) if _identity(d) == _identity(doc)]
        if same:
            combined[same[0]] = doc
        else:
            combined.append(doc)
    return combined


_POD_FQDN = re.compile(
    r"^(?P<sts>[a-z0-9-]+)-(?P<ordinal>\d+)\.(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)"
    r"\.svc\.cluster\.local$"
)


def pod_ordinal(hostname: str, statefulset: StatefulSet) -> int | None:
    """The ordinal of a StatefulSet pod DNS name (`<sts>-N.<svc>.<ns>.svc.cluster.local`)."""
    match = _POD_FQDN.match(hostname)
    if not match:
        return None
    if (match["sts"], match["svc"], match["ns"]) != (
        statefulset.name,
        statefulset.service_name,
        statefulset.namespace,
    ):
        return None
    ordinal = int(match["ordinal"])
    return ordinal if ordinal < statefulset.replicas else None


def _get(doc: Document, path: str, source: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ManifestError(f"{source}: {doc['kind']} has no {path}")
        node = node[part]
    return node


def _services(k8s: tuple[Manifest, ...]) -> tuple[Service, ...]:
    found = []
    for manifest in k8s:
        for doc in manifest.documents:
            if doc["kind"] != "Service":
                continue
            spec = _get(doc, "spec", manifest.relpath)
            found.append(
                Service(
                    name=_get(doc, "metadata.name", manifest.relpath),
                    namespace=doc["metadata"].get("namespace", "default"),
                    headless=spec.get("clusterIP") == "None",
                    ports=tuple(
                        ServicePort(
                            name=p.get("name", ""),
                            port=int(p["port"]),
                            target_port=int(p.get("targetPort", p["port"])),
                        )
                        for p in spec.get("ports", [])
                    ),
                    selector=dict(spec.get("selector", {})),
                )
            )
    return tuple(found)


def _count(value: Any, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ManifestError(f"{source}: {what} must be a positive integer, not {value!r}")
    return value


def _statefulset(k8s: tuple[Manifest, ...]) -> tuple[StatefulSet, str]:
    for manifest in k8s:
        for doc in manifest.documents:
            if doc["kind"] == "StatefulSet" and doc["metadata"]["name"] == STATEFULSET:
                source = manifest.relpath
                containers = _get(doc, "spec.template.spec.containers", source)
                sts = StatefulSet(
                    name=STATEFULSET,
                    namespace=doc["metadata"].get("namespace", "default"),
                    replicas=_count(_get(doc, "spec.replicas", source), "spec.replicas", source),
                    service_name=_get(doc, "spec.serviceName", source),
                    image=containers[0]["image"],
                )
                return sts, source
    raise ManifestError(f"{K8S_FILES[1]}: no StatefulSet {STATEFULSET!r}")


def _redis_conf(k8s: tuple[Manifest, ...]) -> str:
    for manifest in k8s:
        for doc in manifest.documents:
            if doc["kind"] == "ConfigMap" and "redis.conf" in doc.get("data", {}):
                return str(doc["data"]["redis.conf"])
    raise ManifestError(f"{K8S_FILES[1]}: no ConfigMap with a redis.conf key")


def render_values(redis_vip: str, read_policy: str,
                  redis_image: str = versions.REDIS_IMAGE) -> dict[str, str]:
    return {"REDIS_VIP": redis_vip, "READ_POLICY": read_policy, "REDIS_IMAGE": redis_image}


def load_extra_envoyfilters(files: Sequence[str | Path], values: Mapping[str, str],
                            ) -> tuple[Manifest, ...]:
    """Render extra EnvoyFilter files; every document in them must be an EnvoyFilter."""
    loaded = []
    for file in files:
        manifest = manifests.load(Path(file).expanduser().resolve(), values)
        others = sorted({d["kind"] for d in manifest.documents} - {"EnvoyFilter"})
        if others or not manifest.documents:
            what = f"holds {', '.join(others)}" if others else "holds no document"
            raise ManifestError(f"{file}: {what}; --envoyfilter takes EnvoyFilters only")
        loaded.append(manifest)
    return tuple(loaded)


def load_spec(redis_vip: str, read_policy: str = DEFAULT_READ_POLICY, mirror: bool = True,
              extra_envoyfilters: Sequence[str | Path] = (),
              redis_image: str = versions.REDIS_IMAGE) -> LabSpec:
    """Render every manifest the lab uses and read the model out of them.

    `extra_envoyfilters` are files rendered with the same placeholders and applied after
    the lab's own EnvoyFilters (a mutant lab).
    """
    if read_policy not in READ_POLICIES:
        raise ManifestError(
            f"unknown read policy {read_policy!r}; valid: {', '.join(READ_POLICIES)}"
        )
    values = render_values(redis_vip, read_policy, redis_image)
    k8s = tuple(manifests.load(path, values) for path in K8S_FILES)
    filters = tuple(manifests.load(path, values) for path in envoyfilter_files(mirror))
    sts, source = _statefulset(k8s)
    services = _services(k8s)
    governing = [s for s in services if s.name == sts.service_name]
    if not governing or not governing[0].headless:
        raise ManifestError(
            f"{source}: serviceName {sts.service_name!r} must name a headless Service, "
            "or the pods get no DNS names"
        )
    return LabSpec(
        read_policy=read_policy,
        mirror=mirror,
        statefulset=sts,
        redis_conf=_redis_conf(k8s),
        services=services,
        k8s=k8s,
        envoyfilters=filters,
        extra_envoyfilters=load_extra_envoyfilters(extra_envoyfilters, values),
    )
