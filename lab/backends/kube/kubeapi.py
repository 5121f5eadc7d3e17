"""The Kubernetes API seam: apply (server-side), delete, readiness, Service IPs, pods.

`ClientApi` uses the kubernetes Python client with the lab's kubeconfig file only (never
~/.kube/config); tests use a recording fake with the same methods.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lab.errors import LabError
from lab.manifests import Document

FIELD_MANAGER = "redis-mesh-lab"

T = TypeVar("T")


@dataclass(frozen=True)
class PodInfo:
    name: str
    ip: str
    phase: str
    ready: bool
    containers: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


class KubeApi(Protocol):
    def apply(self, doc: Document) -> None: ...
    def delete(self, doc: Document) -> bool: ...
    def not_ready(self, kind: str, namespace: str | None, name: str) -> str | None:
        """None when the object is ready, else why not (for the wait's message)."""
        ...
    def exists(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool: ...
    def cluster_ip(self, namespace: str, name: str) -> str: ...
    def pods(self, namespace: str, selector: str) -> list[PodInfo]: ...


def ref(doc: Document) -> str:
    meta = doc.get("metadata", {})
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{doc['kind']} {where}{meta.get('name', '?')}"


def not_ready_reason(kind: str, obj: dict[str, Any]) -> str | None:
    """Readiness of a Deployment, StatefulSet or CRD from its API object."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if kind == "Deployment":
        want, have = int(spec.get("replicas", 1)), int(status.get("availableReplicas") or 0)
        return None if have >= want else f"{have}/{want} replicas available"
    if kind == "StatefulSet":
        want, have = int(spec.get("replicas", 1)), int(status.get("readyReplicas") or 0)
        return None if have >= want else f"{have}/{want} replicas ready"
    if kind == "CustomResourceDefinition":
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Established" and condition.get("status") == "True":
                return None
        return "not Established"
    raise LabError(f"no readiness rule for {kind}")


KUBE_EXTRA = "the kind/existing backends need the [kube] extra: pip install 'redis-mesh-lab[kube]'"


def require_kubernetes() -> None:
    """One line instead of an ImportError when the optional Kubernetes packages are missing."""
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        raise LabError(KUBE_EXTRA) from None


def _api_errors(func: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        require_kubernetes()
        from kubernetes.client.rest import ApiException
        from kubernetes.dynamic.exceptions import DynamicApiError
        from urllib3.exceptions import HTTPError

        try:
            return func(*args, **kwargs)
        except (ApiException, DynamicApiError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise LabError(f"Kubernetes API: {func.__name__} failed: {exc.status} {reason}"
                           ) from None
        except HTTPError as exc:
            raise LabError(f"Kubernetes API unreachable: {exc}") from None

    return wrapper


class ClientApi:
    def __init__(self, kubeconfig: Path, context: str | None) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self._client: Any = None
        self._dynamic: Any = None

    def _dyn(self) -> Any:
        if self._dynamic is None:
            require_kubernetes()
            from kubernetes import config, dynamic

            if not self.kubeconfig.is_file():
                raise LabError(f"kubeconfig {self.kubeconfig} does not exist")
            self._client = config.new_client_from_config(config_file=str(self.kubeconfig),
                                                         context=self.context)
            self._dynamic = dynamic.DynamicClient(self._client)
        return self._dynamic

    def _resource(self, api_version: str, kind: str) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        dyn = self._dyn()
        try:
            return dyn.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            dyn.resources.invalidate_cache()  # a CRD applied moments ago
            try:
                return dyn.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                raise LabError(f"the cluster serves no {kind} ({api_version})") from None

    @_api_errors
    def apply(self, doc: Document) -> None:
        resource = self._resource(doc["apiVersion"], doc["kind"])
        meta = doc["metadata"]
        self._dyn().server_side_apply(
            resource, body=doc, name=meta["name"], namespace=meta.get("namespace"),
            force_conflicts=True, field_manager=FIELD_MANAGER,
        )

    @_api_errors
    def delete(self, doc: Document) -> bool:
        from kubernetes.dynamic.exceptions import NotFoundError

        resource = self._resource(doc["apiVersion"], doc["kind"])
        meta = doc["metadata"]
        try:
            resource.delete(name=meta["name"], namespace=meta.get("namespace"))
        except NotFoundError:
            return False
        return True

    @_api_errors
    def not_ready(self, kind: str, namespace: str | None, name: str) -> str | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        api_version = {"Deployment": "apps/v1", "StatefulSet": "apps/v1",
                       "CustomResourceDefinition": "apiextensions.k8s.io/v1"}[kind]
        try:
            obj = self._resource(api_version, kind).get(name=name, namespace=namespace)
        except NotFoundError:
            return "not found"
        return not_ready_reason(kind, obj.to_dict())

    @_api_errors
    def exists(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            self._resource(api_version, kind).get(name=name, namespace=namespace)
        except NotFoundError:
            return False
        return True

    @_api_errors
    def cluster_ip(self, namespace: str, name: str) -> str:
        obj = self._resource("v1", "Service").get(name=name, namespace=namespace).to_dict()
        ip = (obj.get("spec") or {}).get("clusterIP")
        if not ip or ip == "None":
            raise LabError(f"Service {namespace}/{name} has no cluster IP")
        return str(ip)

    @_api_errors
    def pods(self, namespace: str, selector: str) -> list[PodInfo]:
        listing = self._resource("v1", "Pod").get(namespace=namespace,
                                                  label_selector=selector).to_dict()
        found = []
        for item in listing.get("items", []):
            status = item.get("status") or {}
            conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            found.append(PodInfo(
                name=item["metadata"]["name"],
                ip=status.get("podIP") or "",
                phase=status.get("phase") or "",
                ready=conditions.get("Ready") == "True",
                containers=tuple(c["name"] for c in (item.get("spec") or {}).get("containers", [])),
                labels=dict(item["metadata"].get("labels") or {}),
            ))
        return sorted(found, key=lambda pod: pod.name)
