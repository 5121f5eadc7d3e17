"""The one change the lab makes to istiod's source before building it.

Since Istio 1.30 (krt ServiceEntry controller, istio/istio#58951, 2026-03-02) pilot-discovery
panics at startup when it runs without Kubernetes (`--configDir`, `--registries=` empty):
`serviceentry.newController` calls `multiclusterController.ConfigCluster().Namespaces()`, and
the multicluster controller exists only with a Kubernetes client (nil pointer dereference in
multicluster.(*Controller).ConfigCluster). Seen with the pinned snapshot; the same line is in
1.30.0, 1.31.0-rc.0 and master. The patch gives the ServiceEntry controller an empty
Namespace collection when there is no cluster; nothing else changes.
"""

from __future__ import annotations

from pathlib import Path

from lab.errors import LabError

ID = "nokube1"  # part of the cache directory and the binary's version string
FILE = "pilot/pkg/serviceregistry/serviceentry/controller.go"
OLD = "\t\ts.inputs.Namespaces = multiclusterController.ConfigCluster().Namespaces()\n"
NEW = (
    "\t\tif multiclusterController != nil {\n"
    "\t\t\ts.inputs.Namespaces = multiclusterController.ConfigCluster().Namespaces()\n"
    "\t\t} else {\n"
    "\t\t\t// redis-mesh-lab: no Kubernetes (file config, no registries): no Namespaces.\n"
    "\t\t\ts.inputs.Namespaces = krt.NewStaticCollection[*v1.Namespace](nil, nil, "
    "s.opts.WithName(\"inputs/Namespaces\")...)\n"
    "\t\t}\n"
)


def apply(source_root: Path) -> None:
    path = source_root / FILE
    text = path.read_text(encoding="utf-8")
    if NEW in text:
        raise LabError(f"{FILE} is already patched (a fresh copy of the source is patched once)")
    if text.count(OLD) != 1:
        raise LabError(f"{FILE}: the line the lab patches is not there once: the pinned Istio "
                       "source changed; review lab/controlplane/istiod_patch.py")
    path.write_text(text.replace(OLD, NEW), encoding="utf-8")
