"""Steady traffic through the proxy, with a consistency checker in the style of redis-rb-cluster's
consistency-test: counters INCRed round-robin, the client keeping what each was acknowledged.

Afterwards every counter is read back: a value below its acknowledged count means acknowledged
writes were lost; above it means writes the client saw fail were applied anyway
("unacknowledged"). Every reply error is kept with its text (so a leaked MOVED/ASK is seen),
with the time of each success and failure, and each operation's latency.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from lab import waits


@dataclass
class Outcome:
    ops: int = 0
    errors: list[tuple[float, str, str]] = field(default_factory=list)  # (time, key, text)
    successes: list[tuple[float, str]] = field(default_factory=list)  # (sent at, key) acked
    latencies: list[float] = field(default_factory=list)  # seconds, successful ops

    @property
    def redirections(self) -> list[str]:
        return [text for _, _, text in self.errors if text.startswith(("MOVED", "ASK"))]

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[int(0.99 * (len(ordered) - 1))] if ordered else float("nan")

    def first_success_after(self, moment: float, keys: set[str]) -> float | None:
        """When the first write to one of `keys` sent at or after `moment` was sent (it was
        then acknowledged)."""
        return next((t for t, key in self.successes if t >= moment and key in keys), None)


@dataclass(frozen=True)
class Consistency:
    keys: int
    acked: int  # writes the client saw succeed
    failed: int  # writes the client saw fail
    lost: int  # acknowledged writes missing from the final values
    unacknowledged: int  # failed writes that were applied anyway

    def as_dict(self) -> dict[str, int]:
        return {"keys": self.keys, "acknowledgedWrites": self.acked, "failedWrites": self.failed,
                "lostWrites": self.lost, "unacknowledgedWrites": self.unacknowledged}


class CounterTraffic(threading.Thread):
    """INCR round-robin over `keys` on a client of its own, until `stop()`."""

    def __init__(self, client: redis.Redis, keys: list[str], pause: float = 0.0) -> None:
        super().__init__(name="counter-traffic", daemon=True)
        self.client = client
        self.keys = keys
        self.pause = pause  # between operations: keeps a 2-core machine usable
        self.acked: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.outcome = Outcome()
        self._halt = threading.Event()
        self.rounds = 0

    def run(self) -> None:
        index = 0
        while not self._halt.is_set():
            key = self.keys[index % len(self.keys)]
            index += 1
            started = time.monotonic()
            try:
                self.client.execute_command("INCR", key)
            except (redis.RedisError, OSError) as exc:
                self.failed[key] += 1
                self.outcome.errors.append((time.monotonic(), key,
                                            str(exc) or type(exc).__name__))
            else:
                done = time.monotonic()
                self.acked[key] += 1
                self.outcome.successes.append((started, key))
                self.outcome.latencies.append(done - started)
            self.outcome.ops += 1
            if index % len(self.keys) == 0:
                self.rounds += 1
            if self.pause:
                self._halt.wait(self.pause)

    def wait_rounds(self, rounds: int, timeout: float = 30) -> bool:
        """Wait until the traffic went over every key `rounds` more times."""
        target = self.rounds + rounds
        deadline = time.monotonic() + timeout
        with waits.waiting(waits.TRAFFIC):
            while self.rounds < target and time.monotonic() < deadline and self.is_alive():
                self._halt.wait(0.01)
        return self.rounds >= target

    def stop(self) -> Outcome:
        self._halt.set()
        self.join(timeout=30)
        return self.outcome

    def check(self, read: Callable[[str], object], keys: list[str] | None = None) -> Consistency:
        """Read the counters back (after `stop`) with `read(key)` and count lost /
        unacknowledged writes."""
        lost = unacked = 0
        keys = self.keys if keys is None else keys
        for key in keys:
            value = read(key)
            actual = int(value) if value is not None else 0
            lost += max(0, self.acked[key] - actual)
            unacked += max(0, actual - self.acked[key])
        return Consistency(keys=len(keys), acked=sum(self.acked[k] for k in keys),
                           failed=sum(self.failed[k] for k in keys), lost=lost,
                           unacknowledged=unacked)
