"""ReadPolicyMaster / PreferMaster / PreferReplica / Any: each on a variant lab with that policy.

Reads are counted by MONITOR on all six nodes at once (`reads.py`). The fallbacks of the
PREFER_* policies need a node down: they use the faults API (seam 3) when it is there.
"""

from __future__ import annotations

import pytest

from lab.conformance.variants import Variant

from .reads import (
    ANY_MIN_SHARE,
    READS_PER_SHARD,
    assert_reads_on,
    assert_reads_spread,
    binomial_tail,
    observe_reads,
)

MASTER = Variant("master", read_policy="MASTER")
PREFER_MASTER = Variant("prefer-master", read_policy="PREFER_MASTER")
PREFER_REPLICA = Variant("prefer-replica", read_policy="PREFER_REPLICA")
ANY = Variant("any", read_policy="ANY")


@pytest.mark.feature("ReadPolicyMaster")
def test_master_reads_reach_only_masters(lab_variant):
    """read_policy MASTER: every GET of every shard is served by the shard's master"""
    assert_reads_on(observe_reads(lab_variant(MASTER)), "master")


@pytest.mark.feature("ReadPolicyPreferMaster")
def test_prefer_master_reads_reach_the_master_when_it_is_up(lab_variant):
    """read_policy PREFER_MASTER, every node up: every GET is served by the shard's master"""
    assert_reads_on(observe_reads(lab_variant(PREFER_MASTER)), "master")


@pytest.mark.feature("ReadPolicyPreferReplica")
def test_prefer_replica_reads_reach_the_replica_when_it_is_up(lab_variant):
    """read_policy PREFER_REPLICA, every node up: every GET is served by the shard's replica"""
    assert_reads_on(observe_reads(lab_variant(PREFER_REPLICA)), "replica")


@pytest.mark.feature("ReadPolicyAny")
def test_any_reads_are_spread_over_master_and_replica(lab_variant):
    """read_policy ANY: each shard's GETs are shared by master and replica (binomial bound)"""
    least = int(ANY_MIN_SHARE * READS_PER_SHARD)
    # the bound is tight enough to catch a one-sided policy and loose enough never to flake
    assert binomial_tail(READS_PER_SHARD, least) < 1e-6
    assert_reads_spread(observe_reads(lab_variant(ANY)))
