"""Where a kube lab lives: its kind cluster name, kubeconfig, context and files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lab import paths
from lab.errors import LabError
from lab.state import LabState

from .plan import Arg, Ref

NAMESPACE = "redis"
ISTIO_NAMESPACE = "istio-system"
SIDECAR = "istio-proxy"  # the injected container
CLUSTER_PREFIX = "rml-"  # kind cluster names: rml-<lab name>


@dataclass(frozen=True)
class Layout:
    lab: str
    existing: bool
    kubeconfig: Path
    context: str | None
    cluster: str | None  # the kind cluster; None for an existing cluster

    @property
    def directory(self) -> Path:
        return paths.lab_dir(self.lab)

    @property
    def kind_config(self) -> Path:
        return self.directory / "kind-config.yaml"

    @property
    def cache_dir(self) -> Path:
        """The Kubernetes clients' cache (never ~/.kube/cache)."""
        return self.directory / "kube-cache"

    def kubectl(self, *args: str) -> list[str]:
        argv = ["kubectl", "--kubeconfig", str(self.kubeconfig), "--cache-dir",
                str(self.cache_dir)]
        if self.context:
            argv += ["--context", self.context]
        return [*argv, *args]

    def exec_in(self, pod: str | Ref, container: str, *command: str, stdin: bool = False,
                namespace: str = NAMESPACE) -> list[Arg]:
        flags = ["-i"] if stdin else []
        return [*self.kubectl("-n", namespace, "exec", *flags), pod, "-c", container, "--",
                *command]

    def admin_get(self, pod: str | Ref, path: str) -> list[Arg]:
        """GET on the pod sidecar's Envoy admin API, through pilot-agent (no port-forward).
        pilot-agent logs to stdout by default; its log goes to stderr, away from the answer."""
        return self.exec_in(pod, SIDECAR, "pilot-agent", "request", "--log_target=stderr",
                            "GET", path.lstrip("/"))

    def istioctl(self, *args: str) -> list[str]:
        argv = ["istioctl", *args, "--kubeconfig", str(self.kubeconfig)]
        if self.context:
            argv += ["--context", self.context]
        return argv


def kind_layout(lab: str) -> Layout:
    directory = paths.lab_dir(lab)
    cluster = CLUSTER_PREFIX + lab
    return Layout(lab=lab, existing=False, kubeconfig=directory / "kubeconfig",
                  context=f"kind-{cluster}", cluster=cluster)


def existing_layout(lab: str, kubeconfig: str | None, context: str | None) -> Layout:
    """An existing cluster: its kubeconfig must be named, by flag or by KUBECONFIG."""
    chosen = kubeconfig or os.environ.get("KUBECONFIG")
    if not chosen:
        raise LabError("--backend existing needs --kubeconfig PATH (or KUBECONFIG set); "
                       "~/.kube/config is never used implicitly")
    if os.pathsep in chosen:
        raise LabError(f"KUBECONFIG={chosen} lists several files; name one with --kubeconfig")
    path = Path(chosen).expanduser().resolve()
    if not path.is_file():
        raise LabError(f"kubeconfig {path} does not exist")
    paths.check_name(lab)
    return Layout(lab=lab, existing=True, kubeconfig=path, context=context, cluster=None)


def layout_of(state: LabState) -> Layout:
    """The layout a saved lab was brought up with."""
    facts = state.kube
    if facts is None or not facts.kubeconfig:
        raise LabError(f"lab {state.name}: its state has no kubeconfig; bring it up again")
    return Layout(lab=state.name, existing=state.backend == "existing",
                  kubeconfig=Path(facts.kubeconfig), context=facts.context,
                  cluster=facts.cluster)
