"""Feature names and profiles (see the conformance features reference)."""

from __future__ import annotations

TUTORIAL = ("TopologyDiscovery", "Sharding", "ReadPolicyReplica", "WriteMirroring")
EXTENDED = (
    "ReadPolicyMaster", "ReadPolicyPreferMaster", "ReadPolicyPreferReplica", "ReadPolicyAny",
    "Failover", "Resharding", "ScaleOut", "MirrorFraction", "MirrorIsolation", "MultiKey",
    "DownstreamAuth", "Transactions", "ModernClients",
)
# Measurements: reported, not pass/fail (a test of one records a table, it never fails on it).
MEASUREMENTS = ("ProxyOverhead", "TimeToReady", "FailoverRecovery", "CommandCoverage")
ALL = TUTORIAL + EXTENDED

PROFILES: dict[str, tuple[str, ...]] = {
    "tutorial": TUTORIAL,
    "extended": EXTENDED,
}
