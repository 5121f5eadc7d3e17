"""Races: two `up`s of one name, two labs racing for one proxy port, a port taken between
its choice and its bind."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import redis

from lab import ports
from tests.conftest import cli, needs_binaries
from tests.lifecycle import (
    assert_nothing_left,
    journal_ports,
    start_up,
)

# ---- races --------------------------------------------------------------------------------


@needs_binaries
def test_same_name_race_one_wins_the_other_exits_at_once(home: Path):
    first, second = start_up("--name", "race"), start_up("--name", "race")
    results = []
    for process in (first, second):
        _, err = process.communicate(timeout=180)
        results.append((process.returncode, err.decode(errors="replace")))
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "lab race is being brought up by pid" in loser or "already up" in loser, loser
    assert "Traceback" not in loser
    lab_ports = journal_ports(home, "race")
    assert cli("down", "--name", "race").returncode == 0
    assert_nothing_left(home, "race", lab_ports)


@needs_binaries
@pytest.mark.parametrize("registries", ["one registry", "two registries"])
def test_two_labs_racing_for_one_proxy_port(home: Path, registries: str):
    """Two labs asking for one --proxy-port at once: one gets it, the other fails in one line.

    With two registries nothing serialises them but the port itself (held, then bound by
    Envoy without SO_REUSEPORT).
    """
    other = home.parent / "other-labs" if registries == "two registries" else home
    # a port no lab chooses (nodes 20000-29999, their bus ports 30000-39999) and the kernel
    # gives no client socket (ephemeral 32768-60999): only the two racers want it, even
    # with other labs coming up at the same time (pytest-xdist)
    port = ports.pick(1, low=10000, high=19999)[0]
    first = start_up("--name", "port-a", "--proxy-port", str(port))
    second = start_up("--name", "port-b", "--proxy-port", str(port),
                      env={"REDIS_MESH_LAB_HOME": str(other)})
    results = {}
    for name, process in (("port-a", first), ("port-b", second)):
        _, err = process.communicate(timeout=180)
        results[name] = (process.returncode, err.decode(errors="replace"))
    winners = [name for name, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    loser = next(name for name in results if name not in winners)
    code, err = results[loser]
    assert code == 2 and "Traceback" not in err, err
    assert f"--proxy-port {port} is already in use" in err
    registry_of = {"port-a": home, "port-b": other}
    assert_nothing_left(registry_of[loser], loser)
    winner = winners[0]
    env = {"REDIS_MESH_LAB_HOME": str(registry_of[winner])}
    status = json.loads(cli("status", "--name", winner, "--json", env=env).stdout)
    assert status["proxy"]["port"] == port
    lab_ports = journal_ports(registry_of[winner], winner)
    assert cli("down", "--name", winner, env=env).returncode == 0
    assert_nothing_left(registry_of[winner], winner, lab_ports)


@needs_binaries
def test_a_port_taken_between_choice_and_bind_is_retried(home: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    """Another program binds a chosen port in the instant after the lab lets go of it:
    the node (and Envoy) fail to bind, cleanly, and `up` starts them on other ports."""
    from lab.backends.base import UpOptions
    from lab.backends.local import LocalBackend
    from lab.progress import Progress

    stolen: dict[str, int] = {}
    competitors: list[socket.socket] = []
    release = ports.Holds.release

    def racing_release(self: ports.Holds, *released: int) -> None:
        release(self, *released)
        kind = "node" if len(released) == 2 else "proxy" if len(released) == 1 else ""
        if kind and kind not in stolen:
            sock = socket.socket()
            sock.bind((ports.LOOPBACK, released[0]))
            sock.listen()
            competitors.append(sock)
            stolen[kind] = released[0]

    monkeypatch.setattr(ports.Holds, "release", racing_release)
    backend = LocalBackend()
    try:
        state = backend.up(UpOptions(name="stolen"), Progress(quiet=True))
        assert set(stolen) == {"node", "proxy"}
        assert state.proxy.port != stolen["proxy"]
        assert stolen["node"] not in {n.port for n in state.topology.nodes}
        logs = (home / "stolen" / "logs")
        assert ports.IN_USE in (logs / "redis-cluster-0.log").read_text()
        # (Envoy's own log is reopened by the retry, so its first complaint may be gone)
        assert [p.name for p in state.processes].count("redis-cluster-0") == 1
        with redis.Redis(ports.LOOPBACK, state.proxy.port, protocol=2) as client:
            assert client.set("k", "v") and client.get("k") == b"v"
        lab_ports = journal_ports(home, "stolen")
    finally:
        backend.down("stolen", Progress(quiet=True))
        for sock in competitors:
            sock.close()
    assert_nothing_left(home, "stolen", lab_ports)
