"""istiod's inputs from the lab model, the lab's DNS, the ADS bootstrap (no istiod run)."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from tenacity import retry, stop_after_delay, wait_fixed

from lab import model
from lab.controlplane import addresses, dns, istio_config, istiod, pilot, xds_bootstrap
from lab.envoy import sidecar
from tests.conftest import needs_binaries

BLOCK = addresses.Block(7)


def _spec(read_policy="REPLICA", mirror=True):
    probe = model.load_spec("127.0.10.1")
    vips = istiod.vips(probe, BLOCK)
    return model.load_spec(vips["redis-cluster"], read_policy, mirror), vips


def _by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_service_entries_mirror_the_services():
    spec, vips = _spec()
    entries = _by_kind(istio_config.service_entries(spec, vips), "ServiceEntry")
    assert set(entries) == {s.name for s in spec.services}
    cluster = entries["redis-cluster"]["spec"]
    assert cluster["hosts"] == ["redis-cluster.redis.svc.cluster.local"]
    assert cluster["addresses"] == [vips["redis-cluster"]] == ["127.77.7.1"]
    assert [p["number"] for p in cluster["ports"]] == [6379, 16379]
    assert (cluster["location"], cluster["resolution"]) == ("MESH_INTERNAL", "STATIC")
    assert cluster["workloadSelector"] == {"labels": {"app": "redis-cluster"}}
    assert "addresses" not in entries["redis-cluster-headless"]["spec"]  # headless: no VIP


def test_workload_entries_are_the_pods_with_their_labels():
    spec, _ = _spec()
    wes = _by_kind(istio_config.workload_entries(spec, istiod.addresses(spec, BLOCK)),
                   "WorkloadEntry")
    assert set(wes) == {*(f"redis-cluster-{i}" for i in range(6)), "redis-mirror",
                        "redis-client"}
    assert wes["redis-cluster-4"]["spec"] == {
        "address": "127.77.7.14",
        "labels": {"app": "redis-cluster",
                   "statefulset.kubernetes.io/pod-name": "redis-cluster-4"}}
    assert wes["redis-mirror"]["spec"]["labels"] == {"app": "redis-mirror"}


def test_envoyfilters_are_the_kubernetes_paths_rendered_documents():
    spec, vips = _spec("PREFER_MASTER", mirror=True)
    docs = istio_config.documents(spec, vips, istiod.addresses(spec, BLOCK))
    filters = [d for d in docs if d["kind"] == "EnvoyFilter"]
    for doc in filters:  # creation order, as `kubectl apply` in this order would give
        assert doc["metadata"].pop("creationTimestamp").startswith("2026-01-01T00:00:0")
    assert filters == spec.envoyfilter_documents
    text = istio_config.to_yaml(filters)
    assert "${" not in text and "127.77.7.1_6379" in text and "PREFER_MASTER" in text
    extra = {"kind": "EnvoyFilter", "metadata": {"name": "x", "namespace": "istio-system"},
             "spec": {"configPatches": []}}
    last = istio_config.envoyfilters(spec, [extra])[-1]
    assert last["metadata"].pop("creationTimestamp") == "2026-01-01T00:00:02Z"
    assert last == extra


def test_client_sidecar_binds_each_service_port_on_its_vip():
    spec, vips = _spec()
    sidecar_doc = istio_config.client_sidecar(spec, vips)
    egress = {(e["bind"], e.get("port", {}).get("number")): e
              for e in sidecar_doc["spec"]["egress"]}
    # the catch-all (no port) binds the mirror's VIP on each of its ports: 127.77.7.2_6379
    assert set(egress) == {("127.77.7.1", 6379), ("127.77.7.1", 16379), ("127.77.7.2", None)}
    assert all(e["captureMode"] == "NONE" for e in egress.values())
    assert list(egress)[-1] == ("127.77.7.2", None)  # Istio: the catch-all comes last
    assert egress[("127.77.7.1", 6379)]["hosts"] == ["redis/redis-cluster.redis.svc.cluster.local"]


def test_mesh_config_has_no_mtls_and_no_telemetry():
    mesh = istio_config.mesh_config()
    assert mesh["rootNamespace"] == "istio-system"
    assert mesh["enableAutoMtls"] is False
    assert mesh["defaultProviders"] == {"metrics": [], "tracing": [], "accessLogging": []}


def test_every_istiod_port_is_on_the_labs_loopback_address():
    ports = pilot.Ports(BLOCK.istiod)
    argv = pilot.argv("pilot-discovery", Path("c"), Path("m"), Path("n"), ports)
    flags = dict(a.split("=", 1) for a in argv if a.startswith("--"))
    for flag in ("--grpcAddr", "--httpAddr", "--monitoringAddr"):
        assert flags[flag].startswith("127.77.7.50:"), flag
    assert flags["--httpsAddr"] == "" and flags["--secureGRPCAddr"] == ""  # disabled
    assert flags["--ctrlz_address"] == "127.77.7.50"
    assert flags["--registries"] == ""
    assert pilot.ENVIRONMENT["ENABLE_CA_SERVER"] == "false"
    assert pilot.ENVIRONMENT["PILOT_ENABLE_ALPN_FILTER"] == "false"
    assert pilot.ENVIRONMENT["PILOT_ENABLE_METADATA_EXCHANGE"] == "false"


def test_missing_istiod_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_MESH_LAB_CACHE", str(tmp_path))
    monkeypatch.delenv("REDIS_MESH_LAB_PILOT", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Exception, match="redis-mesh-lab tools install istiod"):
        pilot.require()


def _query(name: str, qtype: int = dns.TYPE_A) -> bytes:
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + question + struct.pack(
        "!HH", qtype, 1)


def test_dns_answers_the_labs_names():
    spec, vips = _spec()
    zone = istiod.zone(spec, vips, istiod.addresses(spec, BLOCK))
    seed = "redis-cluster-3.redis-cluster-headless.redis.svc.cluster.local"
    assert zone[seed] == ["127.77.7.13"]
    assert zone["redis-cluster.redis.svc.cluster.local"] == ["127.77.7.1"]
    assert len(zone["redis-cluster-headless.redis.svc.cluster.local"]) == 6
    reply = dns.answer(_query(seed.upper()), zone)
    assert reply is not None
    ident, flags, _, ancount = struct.unpack("!HHHH", reply[:8])
    assert (ident, flags & 0xF, ancount) == (0x1234, 0, 1)
    assert socket.inet_ntoa(reply[-4:]) == "127.77.7.13"
    aaaa = dns.answer(_query(seed, 28), zone)
    assert aaaa is not None and struct.unpack("!HHHH", aaaa[:8])[3] == 0  # no data, no error
    unknown = dns.answer(_query("nope.redis.svc.cluster.local"), zone)
    assert unknown is not None and struct.unpack("!H", unknown[2:4])[0] & 0xF == 3  # NXDOMAIN


def test_dns_responder_serves_over_udp(tmp_path):
    zone_file = tmp_path / "zone.json"
    zone_file.write_text(json.dumps({"a.example": ["127.77.7.9"]}))
    port_file = tmp_path / "port"
    process = subprocess.Popen([sys.executable, "-m", "lab.controlplane.dns", str(zone_file),
                                "127.0.0.1", str(port_file)])

    @retry(stop=stop_after_delay(15), wait=wait_fixed(0.05), reraise=True)
    def bound() -> int:
        assert process.poll() is None, "the DNS responder exited"
        return int(port_file.read_text())  # written once the socket is bound

    try:
        port = bound()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(_query("a.example"), ("127.0.0.1", port))
            reply = sock.recv(512)
        assert socket.inet_ntoa(reply[-4:]) == "127.77.7.9"
    finally:
        process.kill()
        process.wait()


def test_unmatched_names_the_envoyfilter():
    spec, _ = _spec()
    dump = {"configs": [
        {"dynamic_listeners": [{"active_state": {"listener": {
            "name": "127.77.7.1_6379",
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy"}]}]}}}]},
        {"dynamic_active_clusters": [{"cluster": {"name": "custom-redis-cluster"}}]},
    ]}
    lines = istiod.unmatched(dump, istio_config.envoyfilters(spec))
    assert len(lines) == 1
    assert "EnvoyFilter istio-system/add-redis-proxy" in lines[0]
    assert "has no envoy.filters.network.redis_proxy" in lines[0]


@needs_binaries
def test_real_envoy_accepts_the_ads_bootstrap(tmp_path):
    spec, _ = _spec()
    boot = xds_bootstrap.build(
        istio_config.node_id(BLOCK.client),
        istio_config.node_metadata(spec, BLOCK.client, "1.31.0"),
        ("127.0.0.1", 15000), (BLOCK.istiod, 15010), (BLOCK.dns, 5353))
    assert boot["node"]["id"] == "sidecar~127.77.7.40~redis-client.redis~redis.svc.cluster.local"
    assert boot["node"]["metadata"]["INTERCEPTION_MODE"] == "NONE"
    sidecar.validate(sidecar.write(boot, tmp_path / "envoy.json"))


def test_the_istiod_patch_applies_to_the_pinned_source(tmp_path):
    from lab import versions
    from lab.controlplane import istiod_patch

    original = (Path.home() / "go" / "pkg" / "mod" / "istio.io"
                / f"istio@{versions.ISTIOD_MODULE_VERSION}" / istiod_patch.FILE)
    if not original.is_file():
        pytest.skip("the pinned istio.io/istio source is not in the Go module cache")
    copy = tmp_path / istiod_patch.FILE
    copy.parent.mkdir(parents=True)
    copy.write_text(original.read_text())
    istiod_patch.apply(tmp_path)
    patched = copy.read_text()
    assert "if multiclusterController != nil {" in patched
    with pytest.raises(Exception, match="already patched"):
        istiod_patch.apply(tmp_path)
    copy.write_text("package serviceentry\n")
    with pytest.raises(Exception, match="not there once"):
        istiod_patch.apply(tmp_path)  # the source changed: no silent build without the fix
