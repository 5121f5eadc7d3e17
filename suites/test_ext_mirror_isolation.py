"""MirrorIsolation: the mirror is a side channel; its failure never reaches the primary traffic.

WRITES SETs through the proxy with the mirror up, then the same with the mirror frozen
(SIGSTOP: it holds its connections and answers nothing) or killed: no primary error, and the
p99 latency within `latency.bound` of the mirror-up run (3 x p99 + 100 ms).
"""

from __future__ import annotations

import json

import allure
import pytest

from .support.keys import token
from .support.latency import bound, p99, timed

WRITES = 300


def _writes(run: str, phase: str) -> list[tuple[str, ...]]:
    return [("SET", f"iso-{run}-{phase}-{i}", "v") for i in range(WRITES)]


@pytest.mark.feature("MirrorIsolation")
@pytest.mark.parametrize("fault", ["freeze", "kill"])
def test_primary_traffic_ignores_a_dead_mirror(lab, fault: str):
    """SETs with the mirror frozen / killed: no error, p99 within the bound of the mirror-up run"""
    faults = getattr(lab, "faults", None)
    if faults is None:
        pytest.skip("needs the faults API (lab.faults)")
    run = token()
    client = lab.proxy_client()
    up_writes, down_writes = _writes(run, "up"), _writes(run, "down")
    try:
        with allure.step(f"{WRITES} SETs with the mirror up"):
            up, up_errors = timed(client, up_writes)
        assert not up_errors, up_errors[:3]
        with allure.step(f"{fault} redis-mirror; {WRITES} SETs"):
            getattr(faults, fault)(lab.mirror)
            down, down_errors = timed(client, down_writes)
        figures = {"fault": fault, "p99MirrorUpMs": round(p99(up) * 1000, 3),
                   "p99MirrorDownMs": round(p99(down) * 1000, 3) if down else None,
                   "boundMs": round(bound(p99(up)) * 1000, 3), "errors": len(down_errors)}
        allure.attach(json.dumps(figures, indent=2), name="MirrorIsolation latency",
                      attachment_type=allure.attachment_type.JSON)
        assert not down_errors, f"primary errors with the mirror {fault}: {down_errors[:3]}"
        assert p99(down) <= bound(p99(up)), figures
        with allure.step("the writes are on the cluster"):
            for command in down_writes[:: WRITES // 10]:
                master = lab.client(lab.state.topology.shard_for_key(command[1]).master)
                assert master.get(command[1]) == b"v", command
    finally:
        faults.undo_all()
        keys = [c[1] for c in up_writes + down_writes]
        for chunk in range(0, len(keys), 200):
            client.execute_command("DEL", *keys[chunk:chunk + 200])
