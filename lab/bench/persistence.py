"""The nodes' persistence during a ProxyOverhead measurement.

The tutorial's redis.conf has `appendonly yes`: every write is appended to the AOF, fsynced
each second by a background thread, and the file is rewritten (a fork) as it grows. On a
2-core machine that work lands on whichever measurement happens to be running, and it weighs
more on the direct path (faster, so more writes per second) than on the proxy's: with it on,
SET/INCR/MSET -P 16 ratios spread by 28-45% within one run; with it off, by 9-19%
(CHANGELOG.md, 2026-12-05).
The proxy is what is measured, so by default the bench turns the AOF off on every node for
the measurement (CONFIG SET, as the lab's admin user) and says so in its report.
"""

from __future__ import annotations

from typing import Literal

from lab.handle import Lab

Mode = Literal["off", "tutorial"]
MODES: tuple[Mode, ...] = ("off", "tutorial")


def describe(mode: Mode) -> str:
    if mode == "off":
        return ("appendonly no on every node for the measurement (CONFIG SET; the tutorial's "
                "redis.conf has appendonly yes, whose fsyncs and rewrites land unevenly on "
                "the two paths)")
    return "appendonly yes, as the tutorial's redis.conf (fsync everysec, automatic rewrites)"


def apply(lab: Lab, mode: Mode) -> dict[str, str]:
    """Set every cluster node's appendonly for `mode`; returns each node's value, read back."""
    wanted = "no" if mode == "off" else "yes"
    seen: dict[str, str] = {}
    for node in lab.nodes:
        client = lab.client(node)
        client.config_set("appendonly", wanted)
        reply = {k.decode() if isinstance(k, bytes) else str(k):
                 v.decode() if isinstance(v, bytes) else str(v)
                 for k, v in client.config_get("appendonly").items()}
        seen[node.name] = reply.get("appendonly", "?")
    return seen
