"""`--backend docker`: the tutorial's pods as containers (see backend.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.backends.docker.backend import DockerBackend


def __getattr__(name: str) -> Any:
    # lazy: the relay (`python -m lab.backends.docker.relay`) starts without the backend
    if name == "DockerBackend":
        from lab.backends.docker.backend import DockerBackend

        return DockerBackend
    raise AttributeError(name)


__all__ = ["DockerBackend"]
