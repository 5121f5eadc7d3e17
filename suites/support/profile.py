"""Tests that belong to no feature (measurements, upstream regressions) run in one profile."""

from __future__ import annotations

import pytest


def only_in(request: pytest.FixtureRequest, profile: str) -> None:
    from lab.conformance import options

    if options.get(request.config, "--lab-profile") != profile:
        pytest.skip(f"runs in the {profile} profile")
