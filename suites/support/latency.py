"""Latency samples of single commands through the proxy, and the bound the suite allows.

A p99 under a fault may exceed the healthy run's by at most FACTOR x p99 + SLACK_S: on a
loaded 2-core machine latency is noisy, while a proxy that waits for the faulty part (op_timeout
5 s, or a socket timeout) exceeds this by orders of magnitude.
"""

from __future__ import annotations

import time

FACTOR = 3.0
SLACK_S = 0.1  # seen: 10 ms spikes on the shared 2-core machine; a waiting proxy: 5 s


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[int(0.99 * (len(ordered) - 1))]


def timed(client, commands: list[tuple[str, ...]],
          give_up_after: int = 3) -> tuple[list[float], list[str]]:
    """Run each command, timing it; (latencies of the successful ones, error texts). Stops at
    `give_up_after` errors: the verdict is made, and each may have waited for a timeout."""
    latencies: list[float] = []
    errors: list[str] = []
    for command in commands:
        started = time.monotonic()
        try:
            client.execute_command(*command)
        except Exception as exc:
            errors.append(f"{command[0]} {command[1] if len(command) > 1 else ''}: {exc}")
            if len(errors) >= give_up_after:
                break
            continue
        latencies.append(time.monotonic() - started)
    return latencies, errors


def bound(baseline_p99: float) -> float:
    return FACTOR * baseline_p99 + SLACK_S
