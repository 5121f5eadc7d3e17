"""Where the suites wait, and on what: a ledger of wait points, read by the bench.

A suite's wait is bounded by a timer that the tutorial or the lab sets (Envoy's
`cluster_refresh_rate`, Redis's `cluster-node-timeout`, replication), or by provisioning.
Each wait point says which:

    with waits.waiting(waits.REFRESH):
        ...  # poll until the proxy's hosts show the change

or, for a whole function, `@waits.counted(waits.REFRESH)`. Only the outermost wait of a
thread counts, so a wait point that calls another is counted once, under its own timer.
The pytest plugin resets the ledger before each test and adds what the test waited to the
conformance report (`waits`); `nox -s bench` shows each timer's share of a profile's wall
time.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

# the wait points' timers: name -> what bounds such a wait
REFRESH = "cluster_refresh_rate"
NODE_TIMEOUT = "cluster-node-timeout"
REPLICATION = "replication"
MONITOR = "monitor"
MIRROR = "mirror"
MIGRATION = "migration"
TRAFFIC = "traffic"
FAULT = "fault"
PROVISIONING = "provisioning"
TIMERS: dict[str, str] = {
    REFRESH: "Envoy asks a node for CLUSTER SLOTS every cluster_refresh_rate (the tutorial's "
             "EnvoyFilter: 5 s): waits for the proxy to see a topology change",
    NODE_TIMEOUT: "Redis flags a silent node FAIL after cluster-node-timeout (the lab: 2 s; "
                  "the tutorial's redis.conf: 15 s), and a replica is then promoted",
    REPLICATION: "asynchronous replication: WAIT until a master's replicas have its writes",
    MONITOR: "MONITOR streams reaching the entries a test looks for",
    MIRROR: "the mirror receiving what Envoy mirrors to it, asynchronously",
    MIGRATION: "slots moved by `redis-cli --cluster reshard` seen by every node",
    TRAFFIC: "rounds of the background traffic a test runs under",
    FAULT: "a fault's revert: the node answering again",
    PROVISIONING: "labs brought up for the test (the session lab, variant labs)",
}


@dataclass
class Tally:
    count: int = 0
    seconds: float = 0.0


_lock = threading.Lock()
_ledger: dict[str, Tally] = {}
_depth = threading.local()


@contextmanager
def waiting(timer: str) -> Iterator[None]:
    """Count the time spent in the block under `timer` (unless an outer wait counts it)."""
    if timer not in TIMERS:
        raise ValueError(f"unknown timer {timer!r}; valid: {', '.join(TIMERS)}")
    depth = getattr(_depth, "value", 0)
    _depth.value = depth + 1
    began = time.monotonic()
    try:
        yield
    finally:
        _depth.value = depth
        if depth == 0:
            spent = time.monotonic() - began
            with _lock:
                tally = _ledger.setdefault(timer, Tally())
                tally.count += 1
                tally.seconds += spent


def counted(timer: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A function that is a wait point: `@waits.counted(waits.REFRESH)`."""
    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wait(*args: P.args, **kwargs: P.kwargs) -> R:
            with waiting(timer):
                return function(*args, **kwargs)
        return wait
    return decorate


def reset() -> None:
    with _lock:
        _ledger.clear()


def taken() -> dict[str, Tally]:
    """What was waited since the last reset, per timer."""
    with _lock:
        return {name: Tally(t.count, t.seconds) for name, t in _ledger.items()}


def add(into: dict[str, Tally], more: dict[str, Tally]) -> None:
    for name, tally in more.items():
        total = into.setdefault(name, Tally())
        total.count += tally.count
        total.seconds += tally.seconds
