"""Backends bring a lab up and down: `local` (processes on loopback), `kind`, `existing`,
`docker` (the pods as containers)."""

from __future__ import annotations

from lab.backends.base import Backend, UpOptions
from lab.errors import LabError

BACKENDS = ("local", "docker", "kind", "existing")


def get_backend(name: str) -> Backend:
    if name == "local":
        from lab.backends.local import LocalBackend

        return LocalBackend()
    if name == "docker":
        from lab.backends.docker import DockerBackend

        return DockerBackend()
    if name in ("kind", "existing"):
        from lab.backends.kube import KubeBackend

        return KubeBackend(existing=name == "existing")
    raise LabError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "UpOptions", "get_backend"]
