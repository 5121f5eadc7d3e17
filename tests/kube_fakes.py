"""Recording fakes of the kube backend's seams (runner, Kubernetes API) for tests: they
answer like a healthy six-pod cluster, so `up` runs end to end without one.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

from lab.backends.kube.kubeapi import PodInfo, ref
from lab.backends.kube.runner import CommandError
from lab.manifests import Document

VIP = "10.96.0.50"
POD_IPS = [f"10.244.0.{10 + i}" for i in range(6)]

# CLUSTER NODES as `redis-cli --cluster create --cluster-replicas 1` leaves six pods.
CLUSTER_NODES = "\n".join([
    f"a0 {POD_IPS[0]}:6379@16379 myself,master - 0 0 1 connected 0-5460",
    f"a1 {POD_IPS[1]}:6379@16379 master - 0 0 2 connected 5461-10922",
    f"a2 {POD_IPS[2]}:6379@16379 master - 0 0 3 connected 10923-16383",
    f"a3 {POD_IPS[3]}:6379@16379 slave a2 0 0 3 connected",
    f"a4 {POD_IPS[4]}:6379@16379 slave a0 0 0 1 connected",
    f"a5 {POD_IPS[5]}:6379@16379 slave a1 0 0 2 connected",
]) + "\n"

CONFIG_DUMP = json.dumps({"configs": [{"dynamic_listeners": [{"active_state": {"listener": {
    "name": f"{VIP}_6379",
    "filter_chains": [{"filters": [{"name": "envoy.filters.network.redis_proxy"}]}],
}}}]}]})
CLUSTERS = "".join(f"custom-redis-cluster::{ip}:6379::health_flags::healthy\n" for ip in POD_IPS)
CLUSTERS_JSON = json.dumps({"cluster_statuses": [{"name": "custom-redis-cluster", "host_statuses": [
    {"address": {"socket_address": {"address": ip, "port_value": 6379}},
     "health_status": {"eds_health_status": "HEALTHY"}} for ip in POD_IPS]}]})


class RecordingRunner:
    """Answers like a healthy cluster; `fail_on` makes a command matching it fail."""

    def __init__(self, fail_on: str | None = None, formed: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on
        self.formed = formed

    def run(self, argv: Sequence[str], input: str | None = None, check: bool = True,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        text = " ".join(argv)
        if self.fail_on and self.fail_on in text:
            if check:
                raise CommandError(argv, 1, "boom: simulated failure")
            return subprocess.CompletedProcess(argv, 1, "", "boom")
        out = ""
        if "cluster info" in text:
            out = ("cluster_state:ok\ncluster_known_nodes:6\n" if self.formed
                   else "cluster_state:fail\ncluster_known_nodes:1\n")
        elif "--cluster create" in text:
            self.formed = True
            out = "[OK] All 16384 slots covered.\n"
        elif "cluster nodes" in text:
            out = CLUSTER_NODES
        elif text.endswith("GET config_dump"):
            out = CONFIG_DUMP
        elif text.endswith("GET clusters?format=json"):
            out = CLUSTERS_JSON
        elif text.endswith("GET clusters"):
            out = CLUSTERS
        elif text.endswith("GET server_info"):
            out = '{"version": "0a1b2c/1.36.2/Clean/RELEASE/BoringSSL"}'
        elif text.endswith("redis-cli info server"):
            out = "# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\n"
        return subprocess.CompletedProcess(argv, 0, out, "")

    def commands(self) -> list[str]:
        return [" ".join(argv) for argv in self.calls]


class FakeApi:
    def __init__(self) -> None:
        self.applied: list[Document] = []
        self.deleted: list[str] = []
        self.waited: list[str] = []
        self.preexisting: set[tuple[str, str]] = set()  # (kind, name) already in the cluster

    def apply(self, doc: Document) -> None:
        self.applied.append(doc)

    def delete(self, doc: Document) -> bool:
        self.deleted.append(ref(doc))
        return True

    def not_ready(self, kind: str, namespace: str | None, name: str) -> str | None:
        self.waited.append(f"{kind} {namespace}/{name}")
        return None

    def exists(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        return any(d["kind"] == kind and d["metadata"]["name"] == name for d in self.applied) \
            or (kind, name) in self.preexisting

    def cluster_ip(self, namespace: str, name: str) -> str:
        assert (namespace, name) == ("redis", "redis-cluster")
        return VIP

    def pods(self, namespace: str, selector: str) -> list[PodInfo]:
        if not selector:
            return [pod for app in ("redis-cluster", "redis-client", "redis-mirror")
                    for pod in self.pods(namespace, f"app={app}")]
        app = selector.partition("=")[2]
        if app == "redis-cluster":
            return [PodInfo(f"redis-cluster-{i}", ip, "Running", True, ("redis", "istio-proxy"),
                            {"app": app}) for i, ip in enumerate(POD_IPS)]
        if app == "redis-client":
            return [PodInfo("redis-client-abc", "10.244.0.30", "Running", True,
                            ("redis-client", "istio-proxy"), {"app": app})]
        if app == "redis-mirror":
            return [PodInfo("redis-mirror-xyz", "10.244.0.31", "Running", True,
                            ("redis-mirror", "istio-proxy"), {"app": app})]
        return []


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return [ref(d) for d in docs]
