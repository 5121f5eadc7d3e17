"""The Lab handle on Kubernetes: the proxy client over `kubectl exec -i`, port-forwards to
pods, the sidecar admin, CLUSTER NODES and readiness parsing. Fakes stand in for kubectl."""

from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path

import pytest

from lab import procs
from lab.backends.kube import proxyclient, readiness, redisinfo
from lab.backends.kube.access import KubeAccess
from lab.errors import LabError
from lab.state import AdminEndpoint, KubeFacts, LabState, MirrorEndpoint, ProxyEndpoint
from lab.topology import Node
from tests.kube_fakes import (
    CLUSTER_NODES,
    CLUSTERS,
    CONFIG_DUMP,
    POD_IPS,
    VIP,
    RecordingRunner,
)

FAKE_REDIS = textwrap.dedent(r'''
    import sys
    r, w = sys.stdin.buffer, sys.stdout.buffer
    store = {}
    while True:
        line = r.readline()
        if not line:
            break
        args = []
        for _ in range(int(line[1:])):
            size = int(r.readline()[1:])
            args.append(r.read(size + 2)[:-2])
        cmd = args[0].upper()
        if cmd == b"SET":
            store[args[1]] = args[2]; w.write(b"+OK\r\n")
        elif cmd == b"GET":
            v = store.get(args[1])
            w.write(b"$-1\r\n" if v is None else b"$%d\r\n%s\r\n" % (len(v), v))
        elif cmd == b"INCR":
            w.write(b":1\r\n")
        else:
            w.write(b"-ERR unknown command\r\n")
        w.flush()
''')

FAKE_KUBECTL = textwrap.dedent(r'''
    import re, socket, sys, time
    port = next(int(a.split(":")[0]) for a in sys.argv if re.fullmatch(r"\d+:6379", a))
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port)); server.listen(5)
    print(f"Forwarding from 127.0.0.1:{port} -> 6379", flush=True)
    while True:
        conn, _ = server.accept(); conn.sendall(b"+PONG\r\n"); conn.close()
''')


def state(lab: str, kubeconfig: Path) -> LabState:
    return LabState(
        name=lab, backend="kind", read_policy="REPLICA", mirror_enabled=True,
        proxy=ProxyEndpoint(host="redis-cluster.redis.svc.cluster.local", port=6379),
        admin=AdminEndpoint(pod="redis-client-abc"),
        mirror=MirrorEndpoint(host="10.244.0.31", port=6379, pod="redis-mirror-xyz"),
        kube=KubeFacts(kubeconfig=str(kubeconfig), context="kind-rml-" + lab,
                       cluster="rml-" + lab, client_pod="redis-client-abc",
                       redis_pods=[f"redis-cluster-{i}" for i in range(6)]),
    )


@pytest.fixture
def kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "kubectl"
    script.write_text(f"#!{sys.executable}\n{FAKE_KUBECTL}")
    script.chmod(0o755)
    monkeypatch.setenv("REDIS_MESH_LAB_KUBECTL", str(script))
    return script


def test_proxy_argv_goes_through_the_client_pod(lab_home: Path, kubectl: Path) -> None:
    access = KubeAccess(state("a1", lab_home / "a1" / "kubeconfig"))
    argv = access.proxy_argv()
    assert argv[:12] == [str(kubectl), "--kubeconfig", str(lab_home / "a1" / "kubeconfig"),
                         "--cache-dir", str(lab_home / "a1" / "kube-cache"),
                         "--context", "kind-rml-a1", "-n", "redis", "exec", "-i",
                         "redis-client-abc"]
    assert argv[12:15] == ["-c", "redis-client", "--"]
    assert argv[15:18] == ["bash", "-c", proxyclient.RELAY]
    assert argv[18:] == ["redis-cluster", "6379"]


def test_cluster_management_runs_in_redis_cluster_0_with_pod_addresses(lab_home: Path,
                                                                       kubectl: Path) -> None:
    access = KubeAccess(state("a1", lab_home / "a1" / "kubeconfig"))
    node = Node(name="redis-cluster-4", host="10.244.0.14", port=6379)
    argv = access.cluster_cli("--cluster", "check", access.cli_address(node))
    assert argv[9:] == ["exec", "redis-cluster-0", "-c", "redis", "--", "redis-cli",
                        "--cluster", "check", "10.244.0.14:6379"]


def test_redis_cli_runs_in_the_client_pod_as_in_the_tutorial(lab_home: Path,
                                                              kubectl: Path) -> None:
    argv = KubeAccess(state("a1", lab_home / "a1" / "kubeconfig")).proxy_cli("GET", "a")
    assert argv[9:11] == ["exec", "redis-client-abc"]
    assert argv[11:] == ["-c", "redis-client", "--", "redis-cli", "-h", "redis-cluster", "-p",
                         "6379", "GET", "a"]


def test_proxy_client_speaks_resp_over_the_pipe(tmp_path: Path) -> None:
    client = proxyclient.client([sys.executable, "-c", FAKE_REDIS])
    try:
        assert client.execute_command("SET", "a", "1") is True
        assert client.execute_command("GET", "a") == b"1"
        assert client.execute_command("GET", "missing") is None
        assert client.execute_command("INCR", "n") == 1
        with pytest.raises(Exception, match="unknown command"):
            client.execute_command("NOPE")
        process = client.connection_pool._available_connections[0].process
    finally:
        client.close()
        client.connection_pool.disconnect()
    assert process is not None and process.poll() is not None  # the relay is gone


def test_admin_get_and_logs_use_the_sidecar(lab_home: Path, kubectl: Path) -> None:
    runner = RecordingRunner()
    access = KubeAccess(state("a2", lab_home / "kc"), runner=runner)
    assert access.admin_get("/config_dump") == CONFIG_DUMP
    assert runner.calls[-1][-9:] == ["redis-client-abc", "-c", "istio-proxy", "--",
                                     "pilot-agent", "request", "--log_target=stderr", "GET",
                                     "config_dump"]
    logs = access.logs()
    assert sorted(logs) == sorted([f"redis-cluster-{i}" for i in range(6)]
                                  + ["redis-client-abc", "redis-mirror-xyz"])
    assert "--all-containers" in runner.calls[-1]


def test_monitor_argv_streams_redis_cli_monitor(lab_home: Path, kubectl: Path) -> None:
    access = KubeAccess(state("a3", lab_home / "kc"))
    assert access.monitor_argv(Node("redis-cluster-4", POD_IPS[4], 6379))[-6:] == [
        "redis-cluster-4", "-c", "redis", "--", "redis-cli", "monitor"]
    assert access.monitor_argv(Node("redis-mirror", "10.244.0.31", 6379))[-6:] == [
        "redis-mirror-xyz", "-c", "redis-mirror", "--", "redis-cli", "monitor"]


def test_address_port_forwards_lazily_and_close_stops_it(lab_home: Path, kubectl: Path) -> None:
    access = KubeAccess(state("a4", lab_home / "kc"))
    host, port = access.address(Node("redis-cluster-0", POD_IPS[0], 6379))
    assert host == "127.0.0.1"
    with socket.create_connection((host, port), timeout=2) as sock:
        assert sock.recv(16) == b"+PONG\r\n"
    assert access.address(Node("redis-cluster-0", POD_IPS[0], 6379)) == (host, port)  # reused
    [process] = access.processes
    assert "pod/redis-cluster-0" in process.expect
    access.close()
    assert not procs.running(process.pid)


def test_mirror_without_pod_is_a_clear_error(lab_home: Path, kubectl: Path) -> None:
    lab = state("a5", lab_home / "kc")
    lab.mirror = MirrorEndpoint(host="", port=6379, pod="")
    with pytest.raises(LabError, match="no mirror"):
        KubeAccess(lab).address(Node("redis-mirror", "", 6379))


def test_cluster_nodes_to_topology() -> None:
    names = {ip: f"redis-cluster-{i}" for i, ip in enumerate(POD_IPS)}
    topo = redisinfo.topology_from_nodes(CLUSTER_NODES, lambda h, p: names[h])
    assert [(s.slots, s.master.name, [r.name for r in s.replicas]) for s in topo.shards] == [
        (((0, 5460),), "redis-cluster-0", ["redis-cluster-4"]),
        (((5461, 10922),), "redis-cluster-1", ["redis-cluster-5"]),
        (((10923, 16383),), "redis-cluster-2", ["redis-cluster-3"]),
    ]


def test_cluster_nodes_with_hostnames_single_slots_and_migrations() -> None:
    text = ("m1 10.0.0.1:6379@16379,redis-cluster-0 myself,master - 0 0 1 connected "
            "0-99 100 [101->-m2]\n"
            "m2 10.0.0.2:6379@16379 master - 0 0 2 connected 101-16383\n")
    reply = redisinfo.slots_from_nodes(text)
    assert [(r[0], r[1], r[2][0]) for r in reply] == [(0, 99, "10.0.0.1"), (100, 100, "10.0.0.1"),
                                                     (101, 16383, "10.0.0.2")]
    with pytest.raises(LabError):
        redisinfo.slots_from_nodes("garbage\n")


def test_cluster_info_formed() -> None:
    assert redisinfo.formed("cluster_state:ok\r\ncluster_known_nodes:6\r\n", 6)
    assert not redisinfo.formed("cluster_state:ok\ncluster_known_nodes:1\n", 6)
    assert not redisinfo.formed("cluster_state:fail\ncluster_known_nodes:6\n", 6)


def test_sidecar_readiness_reasons() -> None:
    assert readiness.sidecar_not_ready(CONFIG_DUMP, CLUSTERS, VIP, 6379, 6) is None
    assert "no listener 10.96.0.9_6379" in readiness.sidecar_not_ready(
        CONFIG_DUMP, CLUSTERS, "10.96.0.9", 6379, 6)
    tcp = CONFIG_DUMP.replace("redis_proxy", "tcp_proxy")
    assert "not envoy.filters.network.redis_proxy" in readiness.sidecar_not_ready(
        tcp, CLUSTERS, VIP, 6379, 6)
    three = "".join(CLUSTERS.splitlines(keepends=True)[:3])
    assert readiness.sidecar_not_ready(CONFIG_DUMP, three, VIP, 6379, 6) == \
        "custom-redis-cluster has 3/6 hosts"


def test_without_the_kube_extra_the_error_is_one_line(monkeypatch, tmp_path):
    import sys

    from lab.backends.kube.kubeapi import KUBE_EXTRA, ClientApi
    from lab.errors import LabError

    monkeypatch.setitem(sys.modules, "kubernetes", None)  # as if not installed
    config = tmp_path / "kubeconfig"
    config.write_text("{}")
    with pytest.raises(LabError) as caught:
        ClientApi(config, None)._dyn()
    assert str(caught.value) == KUBE_EXTRA
    assert "pip install 'redis-mesh-lab[kube]'" in KUBE_EXTRA


class NodeRunner(RecordingRunner):
    """The kind node's container runtime: one redis container per pod, which answers PING,
    paused and resumed by ctr (a killed one is restarted, as kubelet does, as `beef`);
    pilot-agent's early log line on stdout before an admin answer."""

    def __init__(self) -> None:
        super().__init__()
        self.task, self.status = "c0ffee", "RUNNING"

    def run(self, argv, input=None, check=True, timeout=None):  # type: ignore[no-untyped-def]
        done = super().run(argv, input=input, check=check, timeout=timeout)
        text = " ".join(argv)
        if "crictl ps" in text:
            done.stdout = f"{self.task}\n"
        elif "tasks ls" in text:
            done.stdout = f"TASK PID STATUS\n{self.task} 4242 {self.status}\n"
        elif "tasks pause" in text:
            self.status = "PAUSED"
        elif "tasks resume" in text:
            assert self.status == "PAUSED", "ctr: cannot resume a running process"
            self.status = "RUNNING"
        elif "tasks kill" in text:
            self.task, self.status = "beef", "RUNNING"
        elif text.endswith("redis-cli ping"):
            done.stdout = "PONG\n"
        elif "pilot-agent request" in text:
            done.stdout = ("2026-12-07T02:46:46.870875Z\twarn\tOS CA Cert could not be found "
                           "for agent\n" + done.stdout)
        return done


def test_faults_pause_resume_and_kill_the_pods_container(lab_home: Path, kubectl: Path) -> None:
    runner = NodeRunner()
    access = KubeAccess(state("a3", lab_home / "kc"), runner=runner)
    node = Node(name="redis-cluster-4", host="10.244.0.14", port=6379)
    access.fault(node, "stop")
    assert runner.commands()[-2:] == [
        "docker exec rml-a3-control-plane crictl ps -q --name ^redis$ --label "
        "io.kubernetes.pod.name=redis-cluster-4 --label io.kubernetes.pod.namespace=redis",
        "docker exec rml-a3-control-plane ctr -n k8s.io tasks pause c0ffee"]
    access.fault(node, "start")  # returns once the node answers PING
    assert runner.commands()[-2].endswith("ctr -n k8s.io tasks resume c0ffee")
    assert runner.commands()[-1].endswith("redis-cluster-4 -c redis -- redis-cli ping")
    access.fault(node, "kill")
    assert runner.commands()[-1].endswith("ctr -n k8s.io tasks kill --signal SIGKILL c0ffee")
    access.fault(node, "start")  # kubelet restarted it: nothing to resume, it answers PING
    assert not [c for c in runner.commands()[-3:] if "tasks resume" in c]
    assert runner.commands()[-1].endswith("redis-cluster-4 -c redis -- redis-cli ping")
    with pytest.raises(LabError, match="not available on backend kind"):
        access.fault(node, "isolate")


def test_faults_need_the_kind_node(lab_home: Path, kubectl: Path) -> None:
    existing = state("a4", lab_home / "kc")
    existing.backend = "existing"
    existing.kube_facts().cluster = None
    runner = NodeRunner()
    with pytest.raises(LabError, match="backend existing does not reach"):
        KubeAccess(existing, runner=runner).fault(
            Node(name="redis-cluster-1", host="10.244.0.11", port=6379), "stop")
    assert runner.calls == []


def test_a_fault_on_a_pod_without_its_container_is_refused(lab_home: Path,
                                                           kubectl: Path) -> None:
    runner = RecordingRunner()  # crictl lists nothing
    with pytest.raises(LabError, match="0 running redis containers, not 1"):
        KubeAccess(state("a5", lab_home / "kc"), runner=runner).fault(
            Node(name="redis-cluster-2", host="10.244.0.12", port=6379), "stop")
    assert not [c for c in runner.commands() if "ctr " in c]


def test_admin_answers_lose_pilot_agents_early_log_lines(lab_home: Path, kubectl: Path) -> None:
    access = KubeAccess(state("a6", lab_home / "kc"), runner=NodeRunner())
    assert access.admin_get("config_dump") == CONFIG_DUMP
    line = "2026-12-07T02:46:46.870875Z\twarn\tOS CA Cert could not be found for agent\n"
    assert readiness.admin_answer(line + line + '{"a": 1}\n') == '{"a": 1}\n'
    assert readiness.admin_answer('{"a": "2026-12-07T02:46:46Z\\tx"}') == \
        '{"a": "2026-12-07T02:46:46Z\\tx"}'
