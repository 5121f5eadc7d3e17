"""The local lab end to end through the CLI: up, write through the proxy, status, down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from lab import procs
from tests.conftest import ROOT, cli, lab_pids, needs_binaries, processes_under

pytestmark = [needs_binaries]


def test_up_write_status_down(no_leaks: Path):
    up = cli("up", "--name", "e2e")
    assert up.returncode == 0, up.stderr
    for step in ("redis-cli --cluster create", "envoy --mode validate", "ready in"):
        assert step in up.stderr  # visible progress
    pids = lab_pids(no_leaks)
    assert len(pids) == 8  # six nodes, the mirror, Envoy
    try:
        status = json.loads(cli("status", "--name", "e2e", "--json").stdout)
        for key in ("name", "backend", "proxy", "admin", "mirror", "readPolicy",
                    "mirrorEnabled", "shards", "processes", "directory", "envoyConfig", "logs"):
            assert key in status
        assert status["readPolicy"] == "REPLICA" and status["mirrorEnabled"] is True
        assert status["directory"] == str(no_leaks / "e2e") and status["problems"] == []
        assert len(status["shards"]) == 3
        assert all(len(s["replicas"]) == 1 for s in status["shards"])
        assert {p["name"] for p in status["processes"]} >= {"envoy", "redis-mirror",
                                                           "redis-cluster-0"}
        assert status["proxy"]["host"] == "127.0.0.1"

        client = redis.Redis(status["proxy"]["host"], status["proxy"]["port"], protocol=2)
        for key in "abcdefgh":
            assert client.set(key, key)
        assert client.get("e") == b"e"
        client.close()

        again = cli("up", "--name", "e2e")
        assert again.returncode == 2 and "already up" in again.stderr
    finally:
        down = cli("down", "--name", "e2e")
    assert down.returncode == 0
    assert not any(procs.running(pid) for pid in pids)
    assert not (no_leaks / "e2e").exists()
    assert cli("down", "--name", "e2e").returncode == 0  # idempotent


def test_options_reach_the_lab(no_leaks: Path):
    up = cli("up", "--name", "opts", "--read-policy", "master", "--no-mirror")
    assert up.returncode == 0, up.stderr
    try:
        status = json.loads(cli("status", "--name", "opts", "--json").stdout)
        assert status["readPolicy"] == "MASTER" and status["mirrorEnabled"] is False
        envoy = json.loads((no_leaks / "opts" / "envoy.json").read_text())
        text = json.dumps(envoy)
        assert '"read_policy": "MASTER"' in text and "request_mirror_policy" not in text
    finally:
        cli("down", "--name", "opts")


def test_ctrl_c_during_up_leaves_nothing(no_leaks: Path):
    process = subprocess.Popen(
        [sys.executable, "-m", "lab", "up", "--name", "interrupted"], cwd=ROOT,
        stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert process.stderr is not None
    for line in process.stderr:  # interrupt while the cluster is being formed
        if "--cluster create" in line or "redis-cli" in line:
            break
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    rest = process.communicate(timeout=60)[1]
    assert process.returncode == 130, rest
    assert "Traceback" not in rest
    assert not (no_leaks / "interrupted").exists()
    deadline = time.monotonic() + 5
    while processes_under(str(no_leaks)) and time.monotonic() < deadline:
        time.sleep(0.1)
