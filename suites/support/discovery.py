"""Envoy's topology discovery as the redis cluster's stats count it.

Every `cluster_refresh_rate` Envoy sends CLUSTER SLOTS to one host it picked at random among
the hosts it knows, a dead one included until a refresh without it succeeds. A request to a
dead host fails (`update_failure`) and the next one waits a whole refresh period. So after a
node dies, Envoy learns the new topology at the first refresh that asked a live node: a bound
on that moment is the configured delay plus one refresh period per failed request, and each
failure is counted here rather than left to chance (1 in 6 per refresh with one node of six
dead).
"""

from __future__ import annotations

import re

from lab.model import PROXY_CLUSTER

from .keys import text

# The tutorial's custom-redis-cluster refresh period: the claims are about it, whatever Envoy runs.
CLUSTER_REFRESH_RATE_S = 5.0
CLUSTER_REFRESH_TIMEOUT_S = 3.0  # the tutorial's cluster_refresh_timeout
_FAILURES = re.compile(rf"^cluster\.{re.escape(PROXY_CLUSTER)}\.update_failure: (\d+)$", re.M)


def node_timeout_s(lab) -> float:
    """The lab's cluster-node-timeout, as its nodes have it (the local lab's 2 s, the
    tutorial's 15 s on Kubernetes)."""
    reply = lab.client(lab.state.topology.nodes[0]).execute_command(
        "CONFIG", "GET", "cluster-node-timeout")
    return int(text(reply[1]) or 0) / 1000


def failed_refreshes(lab) -> int:
    """CLUSTER SLOTS requests of Envoy's discovery that failed so far (a counter)."""
    found = _FAILURES.search(lab.admin(f"/stats?filter={PROXY_CLUSTER}.update_failure"))
    assert found is not None, f"Envoy's stats have no {PROXY_CLUSTER}.update_failure"
    return int(found.group(1))
