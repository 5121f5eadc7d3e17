"""The builtin control plane: the sidecar baseline with the EnvoyFilters applied by our patcher."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lab.envoy import baseline, patcher
from lab.manifests import Document
from lab.model import LabSpec, Service, combine_envoyfilters

NAME = "builtin"
Address = tuple[str, int]


def describe() -> str:
    return "builtin (lab/envoy/patcher.py: Istio's EnvoyFilter semantics, re-implemented)"


def sidecar_config(
    spec: LabSpec,
    vips: Mapping[str, str],
    endpoints: Callable[[Service, int], list[Address]],
    bind: Callable[[Service, int], Address],
    extra_envoyfilters: Sequence[Document] = (),
) -> dict[str, list[dict[str, Any]]]:
    """The sidecar's listeners and clusters after the lab's (and any extra) EnvoyFilters."""
    base = baseline.build(spec.services, vips, endpoints, bind)
    return patcher.apply_envoyfilters(base, combine_envoyfilters(spec.all_envoyfilter_documents,
                                                                 extra_envoyfilters))
