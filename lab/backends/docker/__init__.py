"""`--backend docker`: the tutorial's pods as containers (see runtime.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.pipeline import Pipeline


def DockerBackend() -> Pipeline:
    """The pipeline on the docker runtime (imported here: the relay, `python -m
    lab.backends.docker.relay`, starts without it)."""
    from lab.backends.docker.runtime import DockerRuntime
    from lab.pipeline import Pipeline

    return Pipeline(DockerRuntime())


__all__ = ["DockerBackend"]
