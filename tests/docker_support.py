"""Helpers of the docker backend's tests: skip (or fail in CI) without an engine."""

from __future__ import annotations

from typing import Any

import pytest

from lab import settings
from lab.backends.docker import engine


def requires_docker() -> Any:
    """A skip mark when no engine answers; with REDIS_MESH_LAB_REQUIRE_DOCKER=1, a failure."""
    reason = engine.available()
    if reason and settings.REQUIRE_DOCKER.enabled():
        pytest.fail(f"{settings.REQUIRE_DOCKER.name}=1 but {reason}", pytrace=False)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def lab_objects(lab: str, home: str) -> tuple[list[str], list[str]]:
    """Names of the containers and networks labelled with this lab and home."""
    client = engine.connect()
    try:
        wanted = {"label": [f"{engine.LABEL_LAB}={lab}", f"{engine.LABEL_HOME}={home}"]}
        # ignore_removed: `up` removes its istio-init containers itself, so one may go between
        # the list and its inspect (lab/ lists with it too)
        return ([c.name for c in client.containers.list(all=True, filters=wanted,
                                                          ignore_removed=True)],
                [n.name for n in client.networks.list(filters=wanted)])
    finally:
        client.close()
