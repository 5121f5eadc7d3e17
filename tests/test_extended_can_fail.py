"""The extended profile's checks fail on labs broken for their claim (read policies, ...).

Each lab here is a local lab brought up in-process with the policy that breaks the claim; the
suite's own assertion functions are run against it and must raise. (The mutants in
manifests/mutants/ with `redis-mesh-lab.io/profile: extended` prove the same through the whole
suite once `nox -s mutations` runs them.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.backends import UpOptions, get_backend
from lab.handle import Lab
from lab.progress import Progress
from suites.reads import assert_reads_on, assert_reads_spread, observe_reads
from tests.conftest import needs_binaries

pytestmark = [needs_binaries]


@pytest.fixture
def local_lab(lab_home: Path) -> Iterator:
    backend = get_backend("local")
    handles: list[Lab] = []

    def up(name: str, **fields) -> Lab:
        state = backend.up(UpOptions(name=name, **fields), Progress(quiet=True))
        handles.append(Lab(state, backend.access(state)))
        return handles[-1]

    yield up
    for handle in handles:
        handle.close()
        backend.down(handle.name, Progress(quiet=True))


@pytest.mark.parametrize(("policy", "holds"), [
    ("REPLICA", {"replica"}),  # PREFER_REPLICA's up-case holds; MASTER, PREFER_MASTER, ANY fail
    ("MASTER", {"master"}),  # PREFER_REPLICA, ANY fail
    ("ANY", {"spread"}),  # MASTER, PREFER_MASTER, PREFER_REPLICA fail
])
def test_each_read_policy_check_fails_on_another_policy(local_lab, policy: str, holds: set[str]):
    found = observe_reads(local_lab(f"policy-{policy.lower()}", read_policy=policy))
    checks = {"master": lambda: assert_reads_on(found, "master"),
              "replica": lambda: assert_reads_on(found, "replica"),
              "spread": lambda: assert_reads_spread(found)}
    for name, check in checks.items():
        if name in holds:
            check()
        else:
            with pytest.raises(AssertionError):
                check()
