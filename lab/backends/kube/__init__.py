"""The kind + Istio backend (`--backend kind`) and an existing cluster (`--backend existing`).

`runtime` carries out lab.pipeline's stages with the steps `steps` builds (printed by
`--dry-run`, executed by `up`), `runner` and
`kubeapi` are the seams to kubectl/kind/istioctl and the Kubernetes API, `access` is how the
suites reach the running lab, `diagnostics` the bundle written when `up` fails.
"""

from lab.backends.kube.runtime import KubeBackend, KubeRuntime

__all__ = ["KubeBackend", "KubeRuntime"]
