"""The extended profile's tests fail on labs broken for their claim, and hold on conforming ones.

Local labs are brought up in-process (one per configuration, shared by this module) and the
suite's own test functions are called with them: a variant test gets a `lab_variant` that
returns the wrong lab, a session-lab test gets a lab whose proxy is replaced by one Redis
server. (The mutants in manifests/mutants/ with `redis-mesh-lab.io/profile: extended` prove the
same through the whole suite once `nox -s mutations` runs them.)
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from lab import binaries
from lab.backends import UpOptions, get_backend
from lab.handle import Lab
from lab.paths import manifests_dir
from lab.progress import Progress
from suites import (
    test_ext_downstream_auth,
    test_ext_failover,
    test_ext_mirror_fraction,
    test_ext_mirror_isolation,
    test_ext_modern_clients,
    test_ext_multikey,
    test_ext_read_policies,
    test_ext_regressions,
    test_ext_resharding,
    test_ext_scale_out,
    test_ext_transactions,
)
from tests.conftest import needs_binaries, processes_under

pytestmark = [needs_binaries]

CONFIGURATIONS = {
    "replica": {},  # the tutorial's lab
    "replica-b": {},  # another, for the tests that break a lab on purpose
    "replica-c": {},
    "master": {"read_policy": "MASTER"},
    "any": {"read_policy": "ANY"},
    "nomirror": {"mirror": False},
    "noredirect": {"read_policy": "PREFER_REPLICA", "spare_pods": 2, "envoyfilters": (
        manifests_dir() / "mutants" / "no-redirection.yaml",)},
    "master-spares": {"read_policy": "MASTER", "spare_pods": 2},
    "slowrefresh": {"envoyfilters": (
        Path(__file__).parent / "data" / "slow-topology-refresh.yaml",)},
}


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Lab]]:
    """`labs(name)`: the local lab of that configuration, brought up on first use."""
    home = tmp_path_factory.mktemp("labs")
    backend = get_backend("local")
    handles: dict[str, Lab] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_MESH_LAB_HOME", str(home))

        def get(name: str) -> Lab:
            if name not in handles:
                state = backend.up(UpOptions(name=f"ext-{name}", **CONFIGURATIONS[name]),
                                   Progress(quiet=True))
                handles[name] = Lab(state, backend.access(state))
            return handles[name]

        try:
            yield get
        finally:
            for handle in handles.values():
                handle.close()
                backend.down(handle.name, Progress(quiet=True))
    assert processes_under(str(home)) == []


def _fails(test: Callable[..., object], *args: object) -> None:
    try:
        test(*args)
    except (AssertionError, redis.RedisError):
        return
    pytest.fail(f"{test.__name__} passed on a lab broken for its claim")


def _variant(lab: Lab) -> Callable[[object], Lab]:
    return lambda variant: lab  # a lab_variant that ignores what was asked for


# ---- read policies: each variant test fails when the proxy uses another policy ------------
POLICY_TESTS = {
    "MASTER": test_ext_read_policies.test_master_reads_reach_only_masters,
    "PREFER_MASTER": test_ext_read_policies.test_prefer_master_reads_reach_the_master_when_it_is_up,
    "PREFER_REPLICA":
        test_ext_read_policies.test_prefer_replica_reads_reach_the_replica_when_it_is_up,
    "ANY": test_ext_read_policies.test_any_reads_are_spread_over_master_and_replica,
}
HOLDS_ON = {"replica": {"PREFER_REPLICA"}, "master": {"MASTER", "PREFER_MASTER"},
            "any": {"ANY"}}


@pytest.mark.parametrize("lab_name", sorted(HOLDS_ON))
def test_read_policy_tests_fail_on_another_policy(labs, lab_name: str):
    lab = labs(lab_name)
    for policy, test in POLICY_TESTS.items():
        if policy in HOLDS_ON[lab_name]:
            test(_variant(lab))
        else:
            _fails(test, _variant(lab))


# ---- variants of the mirror and of AUTH ---------------------------------------------------
def test_mirror_fraction_fails_on_a_full_mirror_and_on_no_mirror(labs):
    _fails(test_ext_mirror_fraction.test_half_of_the_writes_are_mirrored, _variant(labs("replica")))
    _fails(test_ext_mirror_fraction.test_half_of_the_writes_are_mirrored,
           _variant(labs("nomirror")))


def test_downstream_auth_fails_on_a_proxy_without_a_password(labs):
    _fails(test_ext_downstream_auth.test_commands_need_auth_first, _variant(labs("replica")))


def test_reads_under_replica_regression_fails_when_envoy_reads_masters(labs, monkeypatch):
    """A lab that says REPLICA (its manifests) while its Envoy reads from masters (a mutant)."""
    monkeypatch.setattr(test_ext_regressions, "only_in", lambda request, profile: None)
    lab = labs("master")
    claimed = Lab(dataclasses.replace(lab.state, read_policy="REPLICA"), lab._access)
    test = test_ext_regressions.test_read_commands_under_replica_never_reach_the_master
    _fails(test, claimed, None)
    test(labs("replica"), None)


# ---- session-lab features: they fail when the proxy is one Redis server -----------------
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
            self._proxy = redis.Redis(host, port, socket_timeout=2, protocol=2)
        return self._proxy

    def proxy_cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        host, port = self._access.address(self._target)
        return subprocess.run([binaries.redis_cli(), "-h", host, "-p", str(port), *args],
                              capture_output=True, text=True, timeout=timeout, check=False)


SESSION_LAB_TESTS = [
    test_ext_multikey.test_mset_mget_are_split_per_shard_and_answered_as_one,
    test_ext_multikey.test_counting_commands_sum_the_shards_replies,
    test_ext_multikey.test_hash_tags_keep_keys_on_one_shard,
    test_ext_transactions.test_single_slot_transaction_is_executed_and_mirrored_as_a_unit,
    test_ext_modern_clients.test_redis_cli_unchanged,
    test_ext_modern_clients.test_redis_py_protocol_2,
    # an expected failure, not a claim, with a redis-py that does not fall back to RESP2
    *([test_ext_modern_clients.test_redis_py_defaults_through_the_tutorials_proxy]
      if test_ext_modern_clients.FALLS_BACK_TO_RESP2 else []),
    test_ext_resharding.test_reshard_under_traffic_is_invisible_to_the_client,
]


@pytest.mark.parametrize("target", ["redis-mirror", "redis-cluster-0"])
def test_session_lab_features_fail_when_the_proxy_is_one_server(labs, target: str):
    good = labs("replica-b" if target == "redis-mirror" else "replica-c")  # a lab each: a
    # failing test on a broken proxy may leave its lab changed
    for test in SESSION_LAB_TESTS:  # they hold on the real proxy ...
        test(good)
    broken = _ProxyIsOneServer(good, good.mirror if target == "redis-mirror"
                               else good.topology.node(target))
    try:
        for test in SESSION_LAB_TESTS:  # ... and each fails on one server
            _fails(test, broken)
    finally:
        broken.close()


def test_mirror_isolation_fails_when_the_primary_is_the_mirror(labs):
    """catch_all_route to the mirror: freezing the mirror stops the primary traffic"""
    isolation = test_ext_mirror_isolation.test_primary_traffic_ignores_a_dead_mirror
    isolation(labs("replica"), "freeze")
    broken = _ProxyIsOneServer(labs("replica"), labs("replica").mirror)
    try:
        _fails(isolation, broken, "freeze")
    finally:
        broken.close()


def test_failover_fails_when_envoy_refreshes_its_topology_slowly(labs):
    """tests/data/slow-topology-refresh.yaml (60 s): writes do not recover within the bound"""
    _fails(test_ext_failover.test_master_killed_under_traffic, labs("slowrefresh"), None)


def test_variant_labs_are_what_they_say(labs):
    assert labs("master").state.read_policy == "MASTER"
    assert Path(labs("master").state.directory).is_dir()


def test_scale_out_fails_when_envoy_does_not_follow_moved(labs):
    """mutant no-redirection: right after the rebalance the client sees MOVED"""
    _fails(test_ext_scale_out.test_a_shard_added_with_add_node_and_rebalance_is_served,
           _variant(labs("noredirect")))


def test_scale_out_fails_when_the_grown_shards_replicas_take_no_reads(labs):
    """read_policy MASTER: the shard with a second replica reads from neither replica"""
    _fails(test_ext_scale_out.test_a_shard_added_with_add_node_and_rebalance_is_served,
           _variant(labs("master-spares")))
