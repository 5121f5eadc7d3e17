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
import redis

from lab.backends import UpOptions, get_backend
from lab.handle import Lab
from lab.progress import Progress
from suites import test_ext_modern_clients, test_ext_multikey, test_ext_transactions
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


class _ProxyIsOneServer(Lab):
    """A broken proxy: the client's connection reaches one Redis server, no redis proxy at all
    (what a `catch_all_route` to a single server, or the tcp_proxy left in place, amounts to)."""

    def __init__(self, lab: Lab, target) -> None:
        super().__init__(lab.state, lab._access)
        self._target = target

    @property
    def proxy(self):
        if self._proxy is None:
            host, port = self._access.address(self._target)
            self._proxy = redis.Redis(host, port, socket_timeout=10, protocol=2)
        return self._proxy


SESSION_LAB_TESTS = [
    test_ext_multikey.test_mset_mget_are_split_per_shard_and_answered_as_one,
    test_ext_multikey.test_counting_commands_sum_the_shards_replies,
    test_ext_multikey.test_hash_tags_keep_keys_on_one_shard,
    test_ext_transactions.test_single_slot_transaction_is_executed_and_mirrored_as_a_unit,
    test_ext_modern_clients.test_redis_cli_unchanged,
    test_ext_modern_clients.test_redis_py_protocol_2,
]


@pytest.mark.parametrize("target", ["redis-mirror", "redis-cluster-0"])
def test_session_lab_features_fail_when_the_proxy_is_one_server(local_lab, target: str):
    good = local_lab("onesrv")
    for test in SESSION_LAB_TESTS:  # they hold on the real proxy ...
        test(good)
    broken = _ProxyIsOneServer(good, good.mirror if target == "redis-mirror"
                               else good.topology.node(target))
    try:
        for test in SESSION_LAB_TESTS:  # ... and each fails on one server
            try:
                test(broken)
            except (AssertionError, redis.RedisError):
                continue
            pytest.fail(f"{test.__name__} passed with the proxy replaced by {target}")
    finally:
        broken.close()
