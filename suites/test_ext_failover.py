"""Failover: a master killed under steady traffic through the proxy.

A consistency checker (redis-rb-cluster's consistency-test style, `traffic.py`) INCRs counters
on every shard through the proxy. One master is SIGKILLed; its replica is promoted by the
cluster; Envoy finds the new master at its next topology refresh. Measured (FailoverRecovery):
the time from the kill to the first acknowledged write to the killed shard, lost writes
(acknowledged, then missing) and unacknowledged writes (failed for the client, applied anyway).

The claim: writes to the killed shard succeed again within
    bound = 2 x cluster-node-timeout + ELECTION + cluster_refresh_rate + cluster_refresh_timeout
(a node is PFAIL after the node timeout and FAIL once a majority of masters reported it, which
the Redis Cluster spec bounds by a second node timeout; the replica's election waits 0.5-1 s,
ELECTION = 1 s; Envoy asks CLUSTER SLOTS every cluster_refresh_rate and may wait
cluster_refresh_timeout for the answer). With the lab's 2 s node timeout and the tutorial's
5 s / 3 s refresh settings: 13 s. Envoy sends each refresh to a host picked at random, the
killed master included until a refresh without it succeeds; each such request fails and costs
one more refresh period, so the bound grows by cluster_refresh_rate per failed refresh Envoy
counted (`update_failure`, reported with the figures). Writes to the other shards never fail, and
no acknowledged write of theirs is lost. Afterwards the killed node is started again, takes its
master role back (CLUSTER FAILOVER) and the lab is proven as at up.
"""

from __future__ import annotations

import json
import time

import allure
import pytest

from lab import waits

from .support.discovery import (
    CLUSTER_REFRESH_RATE_S,
    CLUSTER_REFRESH_TIMEOUT_S,
    failed_refreshes,
    node_timeout_s,
)
from .support.health import heal
from .support.keys import per_shard
from .support.traffic import CounterTraffic

ELECTION_S = 1.0
# The tutorial's custom-redis-cluster settings: the claim is about them, whatever Envoy runs.
KEYS_PER_SHARD = 8


def _write_figures(request, figures: dict) -> None:
    allure.attach(json.dumps(figures, indent=2), name="FailoverRecovery",
                  attachment_type=allure.attachment_type.JSON)
    try:
        from lab.pytest_plugin import record_measurement, run_folder

        record_measurement(request.node, "FailoverRecovery", figures)

        folder = run_folder(request.config)
    except Exception:
        return
    if folder is None:  # no --lab-reports: nothing is written
        return
    (folder / "failover.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


def _without(lab, dead, seconds: float = 15):
    """The slot map once the node asked no longer names `dead` as a master: the first node
    that answers CLUSTER SLOTS may learn of the promotion a moment after Envoy did."""
    deadline = time.monotonic() + seconds
    while True:
        now = lab.cluster_slots_topology()
        if all(s.master.name != dead.name for s in now.shards) or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


@waits.counted(waits.NODE_TIMEOUT)
def _wait_recovery(traffic, since: float, keys: set[str], patience: float) -> float | None:
    """When the first write to `keys` sent after `since` that succeeded was sent; watched past
    the bound (up to `patience`) so that a late recovery is still measured."""
    deadline = since + patience
    while time.monotonic() < deadline and traffic.is_alive():
        found = traffic.outcome.first_success_after(since, keys)
        if found is not None:
            return found
        time.sleep(0.05)
    return None


def _recovered(lab, traffic, dead_at: float, keys: set[str], *, bound: float,
               failed_before: int) -> tuple[float | None, int]:
    """When the first write to `keys` sent after the node was dead was sent (a write sent
    before proves nothing), and how many of Envoy's refreshes failed since the kill."""
    with allure.step(f"wait for a write to its keys to succeed (bound {bound:g} s, + "
                     f"{CLUSTER_REFRESH_RATE_S:g} s per refresh Envoy sent to a dead node)"):
        recovered_at = _wait_recovery(traffic, dead_at, keys, bound + 30)
        return recovered_at, failed_refreshes(lab) - failed_before


def _figures(victim, recovery, bound, settings, *, victim_figures, healthy_figures, outcome,
             errors_elsewhere: int) -> dict:
    node_timeout, refresh, refresh_timeout, failed = settings
    return {
        "killed": victim.master.name, "promoted": victim.replicas[0].name,
        "recoverySeconds": None if recovery is None else round(recovery, 3),
        "boundSeconds": bound,
        "bound": {"clusterNodeTimeout": node_timeout, "election": ELECTION_S,
                  "clusterRefreshRate": refresh, "clusterRefreshTimeout": refresh_timeout,
                  "failedRefreshes": failed},
        "killedShard": victim_figures.as_dict(), "otherShards": healthy_figures.as_dict(),
        "errorsOnOtherShards": errors_elsewhere,
        "clientErrors": sorted({e[2][:80] for e in outcome.errors})[:10],
        "redirectionsSeen": len(outcome.redirections),
    }


@pytest.mark.feature("Failover")
def test_master_killed_under_traffic(lab, request):
    """kill -9 a master while INCR traffic runs: writes recover within the bound, nothing
    acknowledged is lost on the healthy shards; roles restored, lab as at up"""
    faults = getattr(lab, "faults", None)
    if faults is None:
        pytest.skip("needs the faults API (lab.faults)")
    refresh, refresh_timeout = CLUSTER_REFRESH_RATE_S, CLUSTER_REFRESH_TIMEOUT_S
    node_timeout = node_timeout_s(lab)
    bound = 2 * node_timeout + ELECTION_S + refresh + refresh_timeout

    topology = lab.state.topology
    victim = topology.shards[-1]
    keys = per_shard(topology, "failover", KEYS_PER_SHARD)
    theirs = {k for k, s in keys.items() if s == victim}
    others = [k for k in keys if k not in theirs]
    traffic = CounterTraffic(lab.proxy_client(), list(keys))
    traffic.start()
    killed_at = None
    try:
        assert traffic.wait_rounds(5), "the traffic did not start"
        failed_before = failed_refreshes(lab)
        with allure.step(f"kill -9 {victim.master.name} (master of slots {victim.slots})"):
            killed_at = time.monotonic()
            faults.kill(victim.master)  # returns once the node is dead
            dead_at = time.monotonic()
        recovered_at, failed = _recovered(lab, traffic, dead_at, theirs, bound=bound,
                                          failed_before=failed_before)
        bound += refresh * failed
        if recovered_at is not None:
            assert traffic.wait_rounds(3), "traffic stalled after the recovery"
        outcome = traffic.stop()
        now = _without(lab, victim.master)  # the data as the cluster holds it: current masters

        def read(key: str) -> object:
            return lab.client(now.shard_for_key(key).master).execute_command("GET", key)

        victim_figures = traffic.check(read, sorted(theirs))
        healthy_figures = traffic.check(read, others)
        recovery = None if recovered_at is None else recovered_at - killed_at
        errors_elsewhere = [e for e in outcome.errors if e[1] not in theirs]
        figures = _figures(victim, recovery, bound,
                           (node_timeout, refresh, refresh_timeout, failed),
                           victim_figures=victim_figures, healthy_figures=healthy_figures,
                           outcome=outcome, errors_elsewhere=len(errors_elsewhere))
        _write_figures(request, figures)
        assert recovery is not None, f"no write to {victim.master.name}'s keys succeeded again"
        assert victim_figures.failed > 0, \
            f"no write to {victim.master.name}'s keys failed: the kill did not take effect"
        assert recovery <= bound, (f"writes recovered after {recovery:.1f} s, bound {bound:g} s "
                                   f"({failed} failed refreshes counted in)")
        assert not errors_elsewhere, f"the healthy shards saw errors: {errors_elsewhere[:3]}"
        assert healthy_figures.lost == 0, figures
        assert not outcome.redirections, outcome.redirections[:3]
    finally:
        traffic.stop()
        if killed_at is not None:
            with allure.step(f"start {victim.master.name} again; CLUSTER FAILOVER back to it"):
                faults.start(victim.master)
        heal(lab, timeout=90)
        lab.proxy.execute_command("DEL", *keys)
