"""`--backend local`: the lab's pods as processes on loopback (runtime.py), reached by
access.py; envoy.py restarts a lab's Envoy, faults.py signals its processes, conf.py
writes their files."""

from __future__ import annotations

from lab.pipeline import Pipeline

from .access import LocalAccess
from .conf import SERVICE_VIPS_BASE, local_vips, mirror_conf, node_conf
from .runtime import LocalRuntime


class LocalBackend(Pipeline):
    """The pipeline on the local runtime."""

    def __init__(self) -> None:
        super().__init__(LocalRuntime())


__all__ = ["SERVICE_VIPS_BASE", "LocalAccess", "LocalBackend", "LocalRuntime", "local_vips",
           "mirror_conf", "node_conf"]
