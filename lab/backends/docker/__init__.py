"""`--backend docker`: the tutorial's pods as containers (see backend.py)."""

from __future__ import annotations

from lab.backends.docker.backend import DockerBackend

__all__ = ["DockerBackend"]
