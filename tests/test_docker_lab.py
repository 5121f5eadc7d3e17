"""The docker backend end to end: the tutorial's command, the suite on pod IPs, faults,
reconfigure, and `down`/interruption leaving nothing behind (found by the lab's labels)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from lab.backends.docker import engine
from lab.state import LabState
from tests import other_user
from tests.conftest import ROOT, cli, needs_binaries, short_registry
from tests.docker_support import lab_objects, requires_docker

pytestmark = [needs_binaries, requires_docker()]

LAB = "docker-t"
# The tests of the module's lab (`docker_lab`): under pytest-xdist with --dist loadgroup (as
# `nox -s tests` runs) one worker runs them all, so the lab is brought up once.
ON_THE_LAB = pytest.mark.xdist_group("test_docker_lab.docker_lab")


def _home_env(home: Path) -> dict[str, str]:
    return {"REDIS_MESH_LAB_HOME": str(home)}


@pytest.fixture(scope="module")
def docker_lab() -> Iterator[LabState]:
    with short_registry() as home:
        previous = os.environ.get("REDIS_MESH_LAB_HOME")
        os.environ["REDIS_MESH_LAB_HOME"] = str(home)
        up = cli("up", "--backend", "docker", "--name", LAB)
        try:
            assert up.returncode == 0, up.stderr
            state = LabState.load(LAB)
            assert state is not None
            yield state
        finally:
            cli("down", "--name", LAB)
            assert lab_objects(LAB, engine.home_id()) == ([], [])
            if previous is None:
                del os.environ["REDIS_MESH_LAB_HOME"]
            else:
                os.environ["REDIS_MESH_LAB_HOME"] = previous


def _stat(state: LabState, name: str) -> int:
    from lab.backends.docker.access import DockerAccess

    text = DockerAccess(state).admin_get(f"/stats?filter=^{re.escape(name)}$")
    match = re.search(rf"{re.escape(name)}: (\d+)", text)
    return int(match.group(1)) if match else 0


def _exec(container: str, *argv: str, user: str | None = None) -> subprocess.CompletedProcess:
    who = ["--user", user] if user else []
    return subprocess.run(["docker", "exec", *who, container, *argv], capture_output=True,
                          text=True, timeout=60, check=False)


@ON_THE_LAB
def test_the_tutorial_command_goes_through_the_sidecar(docker_lab: LabState):
    client = docker_lab.docker_facts().containers["redis-client"]
    sets = "redis.redis_stats.command.set.total"
    before = _stat(docker_lab, sets)
    result = _exec(client, "redis-cli", "-h", "redis-cluster", "set", "a", "a")
    assert result.stdout.strip() == "OK", result.stderr
    assert _stat(docker_lab, sets) == before + 1  # Envoy's redis proxy handled it
    got = _exec(client, "redis-cli", "-h", "redis-cluster.redis.svc.cluster.local", "get", "a")
    assert got.stdout.strip() == "a"
    # "a" (slot 15495) lives on the master that owns that slot, at its pod IP
    master = docker_lab.topology.shard_for_slot(15495).master
    with redis.Redis(master.host, master.port, socket_timeout=5) as node:
        assert node.execute_command("GET", "a", NEVER_DECODE=True) == b"a"


@ON_THE_LAB
def test_cli_runs_redis_cli_inside_the_lab(docker_lab: LabState):
    """`redis-mesh-lab cli` is the tutorial's `kubectl exec ... redis-cli -h redis-cluster`."""
    assert cli("cli", "--name", LAB, "set", "cli-key", "v").stdout.strip() == "OK"
    assert cli("cli", "--name", LAB, "get", "cli-key").stdout.strip() == "v"
    node = cli("cli", "--name", LAB, "--node", "redis-cluster-0", "acl", "whoami")
    assert node.stdout.strip() == "rml-admin", node.stderr  # the lab's admin user on a node


@ON_THE_LAB
def test_the_vip_is_held_by_no_container(docker_lab: LabState):
    """Envoy's own uid is not captured: from it, the Service VIP answers nothing."""
    client = docker_lab.docker_facts().containers["redis-client"]
    direct = _exec(client, "redis-cli", "-h", "redis-cluster", "ping", user="1337")
    assert "PONG" not in direct.stdout


@ON_THE_LAB
def test_nodes_are_reached_at_their_pod_ips(docker_lab: LabState):
    subnet = ipaddress.ip_network(docker_lab.docker_facts().subnet)
    for node in docker_lab.topology.nodes:
        assert ipaddress.ip_address(node.host) in subnet and node.port == 6379


@ON_THE_LAB
def test_another_user_cannot_wreck_a_node_at_its_pod_ip(docker_lab: LabState):
    """The node IPs are reachable by every local user: the ACL holds there as on local."""
    node = docker_lab.topology.shards[0].master
    other_user.assert_refused_everything(node)
    other_user.assert_refused_everything(docker_lab.mirror_node)
    other_user.assert_proxy_needs_served(node)


def _run_suite(reports: Path) -> tuple[subprocess.CompletedProcess, dict]:
    import yaml

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q",
         "--lab-backend", "attach", "--lab-name", LAB, f"--lab-reports={reports}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    report = yaml.safe_load((reports / "latest" / "conformance.yaml").read_text())
    return result, report


@ON_THE_LAB
def test_tutorial_profile_passes(docker_lab: LabState, tmp_path: Path):
    result, report = _run_suite(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert report["implementation"]["backend"] == "docker"
    features = report["profiles"][0]["features"]
    assert set(features) == {"TopologyDiscovery", "Sharding", "ReadPolicyReplica",
                             "WriteMirroring"}
    assert all(f["result"] == "success" for f in features.values())


@ON_THE_LAB
def test_second_up_is_refused(docker_lab: LabState):
    again = cli("up", "--backend", "docker", "--name", LAB)
    assert again.returncode == 2 and "already up" in again.stderr


def _wait_recovered(state: LabState, timeout: float = 60) -> None:
    """Every node says cluster_state:ok and Envoy sees all six hosts healthy again."""
    from lab.backends.docker.access import DockerAccess
    from lab.envoy.admin import CLUSTERS_JSON, parse_hosts

    access = DockerAccess(state)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                ok = 0
                for node in state.topology.nodes:  # as the lab's own tooling: its admin
                    with redis.Redis(node.host, node.port, socket_timeout=1,
                                     **access.credentials()) as conn:
                        ok += b"cluster_state:ok" in conn.execute_command(
                            "CLUSTER", "INFO", NEVER_DECODE=True)
                hosts = parse_hosts(access.admin_get(CLUSTERS_JSON), "custom-redis-cluster")
                if ok == 6 and list(hosts.values()).count("healthy") == 6:
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the lab did not recover from the faults")
            time.sleep(0.2)
    finally:
        access.close()


@ON_THE_LAB
def test_faults_act_on_containers(docker_lab: LabState):
    from lab.backends.docker.access import DockerAccess

    access = DockerAccess(docker_lab)
    replica = docker_lab.topology.shards[0].replicas[0]
    try:
        def answers() -> bool:
            try:
                with redis.Redis(replica.host, replica.port, socket_timeout=0.5,
                                 socket_connect_timeout=0.5) as node:
                    return bool(node.ping())
            except (redis.RedisError, OSError):
                return False

        for fault, undo in (("freeze", "unfreeze"), ("isolate", "reconnect"),
                            ("kill", "start")):
            access.fault(replica, fault)
            if fault == "kill":  # returned once dead: a Failover measured from here is honest
                assert access._container(replica).status == "exited"
            assert not answers(), fault  # the fault is in place
            access.fault(replica, undo)
        for undo in ("unfreeze", "reconnect", "start"):  # undoing what is not in place: no-op
            access.fault(replica, undo)
        # back with its data dir and IP: the cluster and Envoy recover
        _wait_recovered(docker_lab)
        with redis.Redis(replica.host, replica.port, socket_timeout=1) as node:
            role = node.execute_command("ROLE", NEVER_DECODE=True)
        assert role[0] == b"slave"
    finally:
        access.close()


@ON_THE_LAB
def test_reconfigure_swaps_extra_envoyfilters(docker_lab: LabState, tmp_path: Path):
    from lab.backends.docker import DockerBackend
    from lab.progress import Progress

    mutant = tmp_path / "read-any.yaml"
    mutant.write_text("""\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: read-any, namespace: istio-system}
spec:
  configPatches:
    - applyTo: NETWORK_FILTER
      match:
        listener:
          name: ${REDIS_VIP}_6379
          filterChain: {filter: {name: envoy.filters.network.redis_proxy}}
      patch:
        operation: MERGE
        value:
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
            settings: {read_policy: ANY}
""")
    backend = DockerBackend()
    state = backend.reconfigure(LAB, [mutant], Progress(quiet=True))
    access = backend.access(state)
    try:
        assert '"read_policy": "ANY"' in access.admin_get("/config_dump")
        assert state.envoyfilters == [str(mutant)]
        state = backend.reconfigure(LAB, [], Progress(quiet=True))
        assert '"read_policy": "ANY"' not in access.admin_get("/config_dump")
        with redis.Redis(unix_socket_path=str(state.directory / "proxy.sock"),
                         protocol=2, socket_timeout=10) as proxy:
            assert proxy.set("after-reconfigure", "1")
    finally:
        access.close()


def test_down_without_state_dir_removes_everything(short_home: Path):
    env = _home_env(short_home)
    up = cli("up", "--backend", "docker", "--name", "docker-gone", "--quiet", env=env)
    assert up.returncode == 0, up.stderr
    home = _home_id(short_home)
    containers, networks = lab_objects("docker-gone", home)
    assert len(containers) == 9 and len(networks) == 1  # 6 nodes, mirror, client, sidecar
    shutil.rmtree(short_home / "docker-gone")
    started = time.monotonic()
    down = cli("down", "--name", "docker-gone", env=env)
    elapsed = time.monotonic() - started
    assert down.returncode == 0, down.stderr
    assert lab_objects("docker-gone", home) == ([], [])
    assert elapsed < 15  # target 5 s; generous on a loaded machine


def test_interrupted_up_leaves_nothing(short_home: Path):
    env = {**os.environ, **_home_env(short_home)}
    home = _home_id(short_home)
    process = subprocess.Popen(
        [sys.executable, "-m", "lab", "up", "--backend", "docker", "--name", "docker-int"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in iter(process.stdout.readline, ""):  # interrupt once the nodes are starting
        if "istio-init" in line or "redis-cli --cluster create" in line:
            break
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode != 0, output
    assert lab_objects("docker-int", home) == ([], [])
    assert not (short_home / "docker-int").exists()


def test_a_killed_up_is_seen_by_status_and_list_and_cleaned_by_the_next_up(short_home: Path):
    """kill -9 of `up` mid-way: status and list find its containers by their labels and say
    it was interrupted; the next `up` of that name removes them itself, in one line."""
    env = _home_env(short_home)
    home = _home_id(short_home)
    process = subprocess.Popen(
        [sys.executable, "-m", "lab", "up", "--backend", "docker", "--name", "docker-k9"],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:  # from here: whatever fails, the lab is taken down
        deadline = time.monotonic() + 120
        while not lab_objects("docker-k9", home)[0]:  # killed once its first container exists
            assert process.poll() is None and time.monotonic() < deadline, "no container started"
            time.sleep(0.1)
        process.kill()
        process.wait(timeout=60)
        status = cli("status", "--name", "docker-k9", env=env)
        assert status.returncode == 1, status.stdout + status.stderr
        assert "was interrupted; redis-mesh-lab down --name docker-k9 removes" in status.stdout
        assert "containers running:" in status.stdout
        listing = cli("list", env=env)
        assert re.search(r"docker-k9\s+docker\s+interrupted\s+\d+/\d+ containers",
                         listing.stdout), listing.stdout
        again = cli("up", "--backend", "docker", "--name", "docker-k9", "--dry-run", env=env)
        assert again.returncode == 0  # a plan changes nothing: the leftovers are still there
        up = cli("up", "--backend", "docker", "--name", "docker-k9", env=env, timeout=300)
        assert up.returncode == 0, up.stderr
        assert "an earlier `up` (pid" in up.stdout + up.stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
        cli("down", "--name", "docker-k9", env=env)
    assert lab_objects("docker-k9", home) == ([], [])
    assert not (short_home / ".locks" / "docker-k9").exists()


def _home_id(home: Path) -> str:
    import hashlib

    return hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:6]


_NO_MIRROR = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: redis-proxy-without-mirror, namespace: istio-system}
spec:
  configPatches:
    - applyTo: NETWORK_FILTER
      match:
        listener:
          name: ${REDIS_VIP}_6379
          filterChain: {filter: {name: envoy.filters.network.redis_proxy}}
      patch:
        operation: REPLACE
        value:
          name: envoy.filters.network.redis_proxy
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
            stat_prefix: redis_stats
            prefix_routes: {catch_all_route: {cluster: custom-redis-cluster}}
            settings: {op_timeout: 5s, enable_redirection: true, read_policy: REPLICA}
"""
_READ_MASTER = _NO_MIRROR.replace("redis-proxy-without-mirror", "read-master").replace(
    "prefix_routes: {catch_all_route: {cluster: custom-redis-cluster}}",
    "prefix_routes: {catch_all_route: {cluster: custom-redis-cluster, request_mirror_policy: "
    "[{cluster: 'outbound|6379||redis-mirror.redis.svc.cluster.local', "
    "exclude_read_commands: true}]}}").replace("read_policy: REPLICA", "read_policy: MASTER")


@ON_THE_LAB
@pytest.mark.parametrize(("mutant", "failing"), [
    (_READ_MASTER, {"ReadPolicyReplica"}),
    (_NO_MIRROR, {"WriteMirroring"}),
], ids=["read-policy-master", "no-mirror"])
def test_the_suite_fails_exactly_the_broken_claim(docker_lab: LabState, tmp_path: Path,
                                                  mutant: str, failing: set[str]):
    """Failure proof on this backend: one broken claim, exactly its feature fails."""
    from lab.backends.docker import DockerBackend
    from lab.progress import Progress

    path = tmp_path / "mutant.yaml"
    path.write_text(mutant)
    backend = DockerBackend()
    backend.reconfigure(LAB, [path], Progress(quiet=True))
    try:
        _, report = _run_suite(tmp_path / "reports")
    finally:
        backend.reconfigure(LAB, [], Progress(quiet=True))
    features = report["profiles"][0]["features"]
    failed = {name for name, f in features.items() if f["result"] != "success"}
    assert failed == failing, report["profiles"][0].get("failedTests")


def test_failed_up_leaves_diagnostics_and_nothing_running(tmp_path: Path, short_home: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    from lab.backends.base import UpOptions
    from lab.backends.docker import DockerBackend
    from lab.errors import LabError
    from lab.progress import Progress

    monkeypatch.setenv("REDIS_MESH_LAB_HOME", str(short_home))
    monkeypatch.chdir(tmp_path)

    def broken(*_: object) -> None:
        raise LabError("injected failure after the cluster formed")

    from lab.backends.docker.runtime import DockerBuild

    monkeypatch.setattr(DockerBuild, "start_proxy", broken)
    with pytest.raises(LabError, match=r"injected failure.*diagnostics in"):
        DockerBackend().up(UpOptions(name="docker-fail"), Progress(quiet=True))
    bundle = tmp_path / "reports" / "diagnostics" / "docker-fail"
    assert (bundle / "redis-cluster-0.log").is_file()
    assert json.loads((bundle / "redis-client.inspect.json").read_text())["HostConfig"]
    assert "--cluster create" in (bundle / "cluster-create.log").read_text()
    assert lab_objects("docker-fail", engine.home_id()) == ([], [])
    assert not (short_home / "docker-fail").exists()
