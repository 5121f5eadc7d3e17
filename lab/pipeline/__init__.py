"""One provisioning pipeline for every backend: the stages (stages.py), what a backend
supplies (runtime.py) and the sequence that runs them (run.py)."""

from __future__ import annotations

from .run import Pipeline, poll
from .runtime import Build, BuildBase, ProxyProof, Runtime
from .stages import DOWN, UP, Stage, StageKey

__all__ = ["DOWN", "UP", "Build", "BuildBase", "Pipeline", "ProxyProof", "Runtime", "Stage",
           "StageKey", "poll"]
