"""The control plane: what turns the lab model and its EnvoyFilters into Envoy's config.

- `builtin`: the project's own sidecar baseline plus Istio's patch semantics
  (lab/envoy/baseline.py, lab/envoy/patcher.py); a patch that matches nothing is an error.
- `istiod`: real pilot-discovery (lab/controlplane/istiod.py), fed ServiceEntries,
  WorkloadEntries, a Sidecar and the EnvoyFilters from files; Envoy gets everything over ADS.

What another backend (docker) uses to run istiod: `istio_config.documents(spec, vips,
pod_addresses, extra)` and `istio_config.mesh_config()` (istiod's files),
`pilot.require()`, `pilot.argv(...)` with `pilot.Ports(<address>)` and
`istiod.wrapped(argv)` (its environment), `istiod.wait_ready(...)`,
`xds_bootstrap.build(...)` (Envoy's ADS bootstrap; the c-ares resolver may point at the
network's own DNS instead of lab/controlplane/dns.py), and `istiod.check_config(...)` /
`istiod.diagnostics(...)`. `render.Renderer` runs either control plane into a bare Envoy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lab import manifests, model
from lab.manifests import Document

CONTROL_PLANES = ("builtin", "istiod")
DEFAULT = "builtin"


def extra_envoyfilters(paths: Sequence[str | Path], vip: str, read_policy: str,
                       ) -> list[Document]:
    """Extra EnvoyFilters (a mutant lab's), rendered with the same placeholders as the lab's own."""
    values = model.render_values(vip, read_policy)
    return manifests.by_kind([manifests.load(Path(p).resolve(), values) for p in paths],
                             "EnvoyFilter")
