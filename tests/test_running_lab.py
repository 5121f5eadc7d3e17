"""A running lab: its status, its CLI, its readiness checks, and what other local users cannot
do to it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from lab import procs
from lab.envoy import proof
from lab.errors import LabError
from lab.state import Process
from lab.topology import Node, Topology
from tests import other_user
from tests.conftest import ROOT, cli, needs_binaries
from tests.lifecycle import (
    assert_nothing_left,
    journal_ports,
    one_line_error,
    wait_for,
)

# ---- a running lab ------------------------------------------------------------------------


# The tests of the module's lab (`running`), in this order: under pytest-xdist with --dist
# loadgroup (as `nox -s tests` runs) one worker runs them all, so the lab is brought up once.
ON_THE_LAB = pytest.mark.xdist_group("test_running_lab.running")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    if not _has_binaries():
        pytest.skip("redis-server/envoy not installed")
    registry = tmp_path_factory.mktemp("running") / "labs"
    env = {"REDIS_MESH_LAB_HOME": str(registry)}
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    up = subprocess.run([sys.executable, "-m", "lab", "up", "--name", "live"], cwd=elsewhere,
                        capture_output=True, text=True, timeout=180, check=False,
                        env={**os.environ, **env, "PYTHONPATH": str(ROOT)})
    assert up.returncode == 0, up.stderr
    assert "redis-mesh-lab cli --name live" in up.stdout
    status = json.loads(cli("status", "--name", "live", "--json", env=env).stdout)
    yield registry, status
    lab_ports = journal_ports(registry, "live")
    down = subprocess.run([sys.executable, "-m", "lab", "down", "--name", "live"],
                          cwd=tmp_path_factory.mktemp("third"), capture_output=True, text=True,
                          timeout=120, check=False,
                          env={**os.environ, **env, "PYTHONPATH": str(ROOT)})
    assert down.returncode == 0, down.stderr
    assert_nothing_left(registry, "live", lab_ports)


def _has_binaries() -> bool:
    from tests.conftest import has_binaries

    return has_binaries()


@ON_THE_LAB
def test_status_json_is_camel_case_with_paths(running):
    registry, status = running
    assert status["directory"] == str(registry / "live")
    assert status["envoyConfig"] == str(registry / "live" / "envoy.json")
    assert status["admin"] == {"socket": str(registry / "live" / "envoy-admin.sock")}
    assert set(status["logs"]) >= {"envoy", "redis-mirror", "redis-cluster-0"}
    assert all(Path(p).is_file() for p in status["logs"].values())
    assert status["problems"] == [] and status["dead"] == []

    def snake(value) -> list[str]:
        if isinstance(value, dict):
            return [k for k in value if "_" in k] + [s for v in value.values() for s in snake(v)]
        if isinstance(value, list):
            return [s for v in value for s in snake(v)]
        return []

    assert snake(status) == []
    listing = json.loads(cli("list", "--json", env={"REDIS_MESH_LAB_HOME": str(registry)}).stdout)
    assert listing[0]["name"] == "live" and snake(listing) == []
    table = cli("list", env={"REDIS_MESH_LAB_HOME": str(registry)}).stdout.splitlines()
    assert table[0].split() == ["NAME", "BACKEND", "PHASE", "RUNNING", "PROXY"]


@ON_THE_LAB
def test_version_and_cli_command(running):
    registry, _ = running
    env = {"REDIS_MESH_LAB_HOME": str(registry)}
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("redis-mesh-lab ")
    assert cli("cli", "--name", "live", "SET", "via-cli", "1", env=env).stdout.strip() == "OK"
    assert cli("cli", "--name", "live", "GET", "via-cli", env=env).stdout.strip() == "1"
    node = cli("cli", "--name", "live", "--node", "redis-cluster-0", "CONFIG", "GET",
               "cluster-node-timeout", env=env)
    assert node.stdout.split() == ["cluster-node-timeout", "2000"], node.stdout + node.stderr
    delay = cli("cli", "--name", "live", "--node", "redis-cluster-3", "CONFIG", "GET",
                "repl-diskless-sync-delay", env=env)
    assert delay.stdout.split() == ["repl-diskless-sync-delay", "0"], delay.stdout + delay.stderr
    ping = cli("cli", "--name", "live", "--node", "redis-cluster-0", "CONFIG", "GET",
               "repl-ping-replica-period", env=env)
    assert ping.stdout.split() == ["repl-ping-replica-period", "1"], ping.stdout + ping.stderr
    one_line_error(cli("cli", "--name", "live", "--node", "nope", env=env),
                   "valid: redis-cluster-0")


@ON_THE_LAB
def test_status_into_a_closed_pipe(running):
    registry, _ = running
    env = {**os.environ, "REDIS_MESH_LAB_HOME": str(registry), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(f"'{sys.executable}' -m lab status --name live | head -1",
                            shell=True, capture_output=True, text=True, env=env, timeout=60,
                            check=False, cwd=ROOT)
    assert result.stdout.startswith("lab live")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


@ON_THE_LAB
def test_readiness_round_trip_refuses_a_node_that_answers_moved(running):
    _, status = running
    topology = Topology.from_list(status["shards"])
    master = topology.shards[0].master
    with pytest.raises(LabError, match="answered MOVED"):
        proof.check_round_trip(lambda: redis.Redis(master.host, master.port, protocol=2),
                               topology, master.address, "the-filter.yaml")
    proof.check_round_trip(lambda: redis.Redis(status["proxy"]["host"], status["proxy"]["port"],
                                               protocol=2), topology, "proxy", "f.yaml")


@ON_THE_LAB
def test_another_user_cannot_reconfigure_or_wreck_a_node(running):
    """A neighbour with no password: no CONFIG, CLUSTER RESET, FLUSHALL, CLIENT KILL, MONITOR,
    MIGRATE, PSYNC ... on a node or on the mirror; the proxy's own commands stay open."""
    _, status = running
    target = Topology.from_list(status["shards"]).shards[0].master
    other_user.assert_refused_everything(target)
    other_user.assert_refused_everything(Node("redis-mirror", status["mirror"]["host"],
                                              status["mirror"]["port"]))
    other_user.assert_proxy_needs_served(target)
    # the traffic path is unchanged: the same user, no auth, through the proxy
    proxy = other_user.as_other_user([other_user.system_redis_cli(), "-h",
                                      status["proxy"]["host"], "-p",
                                      str(status["proxy"]["port"]), "SET", "other-user", "1"])
    assert proxy.stdout.strip() == "OK", proxy.stdout + proxy.stderr


def _admin_clients(registry: Path, status: dict) -> list[redis.Redis]:
    password = (registry / "live" / "admin.password").read_text().strip()
    return [redis.Redis(n.host, n.port, username="rml-admin", password=password,
                        socket_timeout=5) for n in Topology.from_list(status["shards"]).nodes]


@ON_THE_LAB
def test_status_names_an_uncovered_slot_and_exits_non_zero(running):
    """A slot no node serves (the ConfigMap's cluster-require-full-coverage no keeps
    cluster_state:ok): status exits 1 naming it; once it is served again, status is clean."""
    registry, status = running
    env = {"REDIS_MESH_LAB_HOME": str(registry)}
    owner = Topology.from_list(status["shards"]).shards[0]
    slot = owner.slots[0][0]
    clients = _admin_clients(registry, status)
    try:
        for client in clients:  # every node forgets the slot: nobody serves it
            client.execute_command("CLUSTER", "DELSLOTS", slot)
        wait_for(lambda: all(b"cluster_slots_assigned:16383" in c.execute_command(
            "CLUSTER", "INFO") for c in clients), 30, "every node without the slot")
        broken = cli("status", "--name", "live", env=env)
        assert broken.returncode == 1, broken.stdout + broken.stderr
        assert "problem: 1 of 16,384 slots are served by no node" in broken.stdout, broken.stdout
    finally:
        master = next(c for c, n in zip(clients, Topology.from_list(status["shards"]).nodes,
                                        strict=True) if n.name == owner.master.name)
        master.execute_command("CLUSTER", "ADDSLOTS", slot)
        wait_for(lambda: all(b"cluster_slots_assigned:16384" in c.execute_command(
            "CLUSTER", "INFO") for c in clients), 30, "every node serving the slot again")
        for client in clients:
            client.close()
    healed = cli("status", "--name", "live", env=env)
    assert healed.returncode == 0 and "problem" not in healed.stdout, healed.stdout


@ON_THE_LAB
def test_another_user_cannot_reach_the_admin_socket(running):
    _, status = running
    sock = status["admin"]["socket"]
    assert os.stat(sock).st_mode & 0o777 == 0o600
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
             f"try:\n s.connect({sock!r})\nexcept OSError as e:\n print(type(e).__name__)\n"
             "else:\n print('CONNECTED')\n")
    result = other_user.as_other_user([python, "-c", probe])
    assert result.stdout.strip() == "PermissionError", result.stdout + result.stderr
    # the owner reaches it (what `status` and the Lab handle do)
    with socket.socket(socket.AF_UNIX) as own:
        own.connect(sock)


@ON_THE_LAB
def test_lab_client_is_the_admin_user(running):
    registry, _ = running
    from lab.backends.local import LocalAccess
    from lab.handle import Lab
    from lab.state import LabState

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_MESH_LAB_HOME", str(registry))
        state = LabState.load("live")
        assert state is not None
        handle = Lab(state, LocalAccess(state))
        try:
            node = handle.nodes[0]
            assert handle.client(node).execute_command("ACL", "WHOAMI") in (b"rml-admin",
                                                                           "rml-admin")
            assert handle.admin("/ready").strip() == "LIVE"
        finally:
            handle.close()


@ON_THE_LAB
def test_attach_to_a_lab_with_a_dead_envoy_stops_in_one_line(running, tmp_path: Path):
    """Last of the module's lab tests: it kills Envoy and a master."""
    registry, status = running
    env = {**os.environ, "REDIS_MESH_LAB_HOME": str(registry), "PYTHONPATH": str(ROOT)}
    state = json.loads((registry / "live" / "state.json").read_text())
    by_name = {p["name"]: p for p in state["processes"]}
    topology = Topology.from_list(status["shards"])
    master = topology.shards[0].master
    replica = topology.shards[0].replicas[0]
    for name in ("envoy", master.name):
        entry = by_name[name]
        procs.terminate(Process(name, entry["pid"], started=entry["started"]),
                        sig=signal.SIGKILL)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "--lab-backend", "attach", "--lab-name", "live",
                             str(ROOT / "suites"), "-q"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=120, check=False)
    assert time.monotonic() - started < 60
    assert result.returncode == 11, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "lab 'live' is not healthy" in text and "Envoy's admin" in text
    assert f"{master.name} ({master.address}) does not answer" in text
    assert " passed" not in text and " failed" not in text

    # status tells the truth: the failed-over master, the dead processes named
    def promoted():
        now = json.loads(subprocess.run([sys.executable, "-m", "lab", "status", "--name",
                                         "live", "--json"], capture_output=True, text=True,
                                        env=env, timeout=60, check=False, cwd=tmp_path).stdout)
        shards = now.get("shards") or []
        return now if any(s["master"]["name"] == replica.name for s in shards) else None

    now = wait_for(promoted, 30, f"{replica.name} to be shown as master")
    assert set(now["dead"]) == {"envoy", master.name}
    assert any(master.name in p for p in now["problems"])
    text = subprocess.run([sys.executable, "-m", "lab", "status", "--name", "live"],
                          capture_output=True, text=True, env=env, timeout=60, check=False,
                          cwd=tmp_path)
    assert text.returncode == 1
    assert f"not running: envoy, {master.name}" in text.stdout or \
        f"not running: {master.name}, envoy" in text.stdout, text.stdout
    assert f"master {replica.name}" in text.stdout

@needs_binaries
def test_admin_socket_under_a_long_registry_path(tmp_path: Path):
    """A socket path beyond the kernel's 108 bytes: Envoy binds it relative to the lab's
    directory and the lab's tooling reaches it through /proc/self/fd."""
    registry = tmp_path / ("r" * 80)
    env = {"REDIS_MESH_LAB_HOME": str(registry)}
    up = cli("up", "--name", "long-socket-path", env=env)
    assert up.returncode == 0, up.stderr
    try:
        status = json.loads(cli("status", "--name", "long-socket-path", "--json", env=env).stdout)
        assert len(status["admin"]["socket"]) > 108 and status["problems"] == []
    finally:
        lab_ports = journal_ports(registry, "long-socket-path")
        assert cli("down", "--name", "long-socket-path", env=env).returncode == 0
    assert_nothing_left(registry, "long-socket-path", lab_ports)
