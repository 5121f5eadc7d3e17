"""`up`/`down` of the kube backend against recording fakes: the exact commands, the applied
manifests, the saved state, and what happens on failure."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from lab.backends import UpOptions
from lab.backends.kube import KubeBackend, steps, tools
from lab.errors import LabError
from lab.progress import Progress
from lab.state import LabState
from tests.kube_fakes import POD_IPS, VIP, FakeApi, RecordingRunner, kinds

QUIET = Progress(quiet=True)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lab_home: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tools, "resolve", lambda release, allow_download=True: release.name)
    monkeypatch.setattr(tools, "kubectl", lambda: "kubectl")


def backend(runner: RecordingRunner, api: FakeApi, existing: bool = False) -> KubeBackend:
    return KubeBackend(existing, runner=runner, api=api, sleep=lambda s: None)

SMALL = " ".join((*steps.SMALL_REQUESTS, *steps.ALL_STATS))


def test_up_runs_the_plan_and_saves_the_state(lab_home: Path) -> None:
    runner, api = RecordingRunner(), FakeApi()
    options = UpOptions(images="upstream", name="k1", istio="tutorial")
    state = backend(runner, api).up(options, QUIET)
    kc = f"{lab_home}/k1/kubeconfig"
    k = f"kubectl --kubeconfig {kc} --cache-dir {lab_home}/k1/kube-cache --context kind-rml-k1 " \
        "-n redis exec"
    cmds = runner.commands()
    assert cmds[:2] == [
        f"kind create cluster --name rml-k1 --config {lab_home}/k1/kind-config.yaml "
        f"--kubeconfig {kc} --wait 300s",
        "istioctl install --skip-confirmation --set components.pilot.hub=zhaohuabing "
        "--set components.pilot.tag=1.7.3-enable-ef-replace "
        f"--set values.global.jwtPolicy=first-party-jwt {SMALL} --kubeconfig {kc} "
        "--context kind-rml-k1",
    ]
    create = f"{k} redis-cluster-0 -c redis -- redis-cli --cluster create --cluster-replicas 1 " \
             "--cluster-yes " + " ".join(f"{ip}:6379" for ip in POD_IPS)
    assert create in cmds
    assert cmds.index(f"{k} redis-cluster-0 -c redis -- redis-cli cluster info") \
        < cmds.index(create)
    assert f"{k} redis-client-abc -c istio-proxy -- pilot-agent request --log_target=stderr GET " \
        "config_dump" in cmds
    assert cmds[-3] == f"{k} redis-cluster-0 -c redis -- redis-cli cluster nodes"
    # the versions the summary shows are read from the running lab, after it is ready
    assert cmds[-2:] == [f"{k} redis-client-abc -c istio-proxy -- pilot-agent request "
                         "--log_target=stderr GET server_info",
                         f"{k} redis-cluster-0 -c redis -- redis-cli info server"]
    assert (state.envoy_version, state.redis_version) == ("1.36.2", "7.0.15")
    from lab.cli import _describe

    shown = _describe(state, topology_lines=[])
    assert "Envoy 1.36.2, Redis 7.0.15" in shown and "?:?" not in shown
    assert "  admin   via kubectl exec redis-client-abc -c istio-proxy" in shown
    assert (lab_home / "k1" / "kind-config.yaml").read_text().count("kindest/node:v1.21.14@") == 1

    assert kinds(api.applied) == [
        "CustomResourceDefinition envoyfilters.networking.istio.io", "Namespace redis",
        "PeerAuthentication redis/redis-permissive", "ConfigMap redis/redis-cluster",
        "StatefulSet redis/redis-cluster", "Service redis/redis-cluster-headless",
        "Service redis/redis-cluster", "Deployment redis/redis-client",
        "Deployment redis/redis-mirror", "Service redis/redis-mirror",
        "EnvoyFilter istio-system/custom-redis-cluster", "EnvoyFilter istio-system/add-redis-proxy",
    ]
    proxy = api.applied[-1]["spec"]["configPatches"][0]
    assert proxy["match"]["listener"]["name"] == f"{VIP}_6379"  # rendered at run time
    assert api.waited[0] == "Deployment istio-system/istiod"

    assert state.backend == "kind" and state.istio_profile == "tutorial"
    assert state.kube_facts().kubeconfig == kc and state.kube_facts().cluster == "rml-k1"
    assert state.kube_facts().client_pod == "redis-client-abc"
    assert state.mirror.pod == "redis-mirror-xyz"
    topo = state.topology
    assert [s.master.name for s in topo.shards] == ["redis-cluster-0", "redis-cluster-1",
                                                    "redis-cluster-2"]
    assert [r.name for s in topo.shards for r in s.replicas] == [
        "redis-cluster-4", "redis-cluster-5", "redis-cluster-3"]
    assert topo.shards[0].master.address == f"{POD_IPS[0]}:6379"
    assert LabState.load("k1") is not None


def test_cluster_create_skipped_when_already_formed() -> None:
    runner = RecordingRunner(formed=True)
    backend(runner, FakeApi()).up(UpOptions(images="upstream", name="k2"), QUIET)
    assert not [c for c in runner.commands() if "--cluster create" in c]


def test_failure_writes_diagnostics_and_deletes_the_cluster(tmp_path: Path,
                                                            lab_home: Path) -> None:
    runner = RecordingRunner(fail_on="istioctl install")
    with pytest.raises(LabError) as caught:
        backend(runner, FakeApi()).up(UpOptions(images="upstream", name="bad", istio="modern"),
                                      QUIET)
    message = str(caught.value)
    assert "\n" not in message and "istioctl install" in message and "diagnostics in" in message
    cmds = runner.commands()
    assert len([c for c in cmds if c.startswith("istioctl install")]) == 3  # retried
    bundle = tmp_path / "reports" / "diagnostics" / "bad"
    assert (bundle / "INDEX.txt").is_file()
    for name in ("kind-export-logs.txt", "describe-pods-redis.txt", "events-redis.txt",
                 "cluster-nodes.txt", "logs-redis-cluster-0.txt",
                 "client-envoy-config_dump.txt", "client-envoy-clusters.txt",
                 "client-envoy-stats.txt"):
        assert (bundle / name).is_file(), name
    assert any(c.startswith(f"kind export logs {bundle}/kind-logs --name rml-bad") for c in cmds)
    assert cmds[-2:] == [  # the lab's own docker network goes too
        f"kind delete cluster --name rml-bad --kubeconfig {lab_home}/bad/kubeconfig",
        "docker network rm rml-bad"]
    assert not (lab_home / "bad").exists()


def test_keep_leaves_the_cluster(lab_home: Path) -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class KeepOptions(UpOptions):
        keep: bool = True

    runner = RecordingRunner(fail_on="--cluster create")
    with pytest.raises(LabError, match="kept"):
        backend(runner, FakeApi()).up(KeepOptions(images="upstream", name="kept"), QUIET)
    assert not [c for c in runner.commands() if c.startswith("kind delete")]
    assert (lab_home / "kept").is_dir()


def test_down_deletes_the_kind_cluster_and_files(lab_home: Path) -> None:
    runner = RecordingRunner()
    b = backend(runner, FakeApi())
    b.up(UpOptions(images="upstream", name="d1"), QUIET)
    runner.calls.clear()
    assert b.down("d1", QUIET) is True
    # the kind built here when there is one (a path), else the pinned one on PATH
    assert [c.split(" ", 1)[0].rsplit("/", 1)[-1] + " " + c.split(" ", 1)[1]
            for c in runner.commands()] == [
        f"kind delete cluster --name rml-d1 --kubeconfig {lab_home}/d1/kubeconfig",
        "docker network rm rml-d1"]
    assert not (lab_home / "d1").exists()
    assert b.down("d1", QUIET) is False


def test_existing_up_and_down_touch_only_the_lab(tmp_path: Path, lab_home: Path) -> None:
    kubeconfig = tmp_path / "theirs.yaml"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    runner, api = RecordingRunner(), FakeApi()
    b = backend(runner, api, existing=True)
    state = b.up(UpOptions(images="upstream", name="e1", kubeconfig=str(kubeconfig)), QUIET)
    assert state.backend == "existing" and state.kube_facts().kubeconfig == str(kubeconfig)
    assert not [c for c in runner.commands() if c.startswith(("kind", "istioctl"))]
    assert all(f"--kubeconfig {kubeconfig}" in c for c in runner.commands())
    assert not (lab_home / "e1" / "kubeconfig").exists()  # nothing copied
    assert b.down("e1", QUIET) is True
    assert api.deleted == ["EnvoyFilter istio-system/add-redis-proxy",
                           "EnvoyFilter istio-system/custom-redis-cluster", "Namespace redis"]


def test_up_refuses_a_lab_that_is_up() -> None:
    b = backend(RecordingRunner(), FakeApi())
    b.up(UpOptions(images="upstream", name="twice"), QUIET)
    with pytest.raises(LabError, match="already up"):
        b.up(UpOptions(images="upstream", name="twice"), QUIET)


def test_existing_refuses_a_redis_namespace_it_did_not_create(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "theirs.yaml"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    api = FakeApi()
    api.preexisting.add(("Namespace", "redis"))
    with pytest.raises(LabError, match="namespace redis already exists"):
        backend(RecordingRunner(), api, existing=True).up(
            UpOptions(images="upstream", name="e2", kubeconfig=str(kubeconfig)), QUIET)
    assert api.applied == [] and api.deleted == []


def test_missing_binary_fails_before_anything_is_created(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lab_home: Path) -> None:
    def missing(release: object, allow_download: bool = True) -> str:
        raise LabError("istioctl 1.7.3 not found: put istioctl 1.7.3 on PATH")

    monkeypatch.setattr(tools, "resolve", missing)
    runner = RecordingRunner()
    with pytest.raises(LabError, match=r"^istioctl 1\.7\.3 not found"):
        backend(runner, FakeApi()).up(UpOptions(images="upstream", name="nt", istio="tutorial"),
                                      QUIET)
    assert runner.calls == []
    assert not (tmp_path / "reports").exists() and not (lab_home / "nt").exists()


def test_missing_kube_extra_fails_before_anything_is_created(
        monkeypatch: pytest.MonkeyPatch, lab_home: Path) -> None:
    """Without the Kubernetes client (the [kube] extra) up stops at once in one line; it once
    created the cluster and then waited 600 s for istiod through an API it could not call."""
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # `import kubernetes` fails
    runner = RecordingRunner()
    with pytest.raises(LabError, match=r"need the \[kube\] extra"):
        KubeBackend(False, runner=runner, sleep=lambda s: None).up(UpOptions(name="nx"), QUIET)
    assert runner.calls == [] and not (lab_home / "nx").exists()


def test_diagnostics_of_a_running_lab(tmp_path: Path) -> None:
    runner = RecordingRunner()
    b = backend(runner, FakeApi())
    state = b.up(UpOptions(images="upstream", name="dg"), QUIET)
    runner.calls.clear()
    dest = b.runtime.diagnostics(state, tmp_path / "bundle")
    index = (dest / "INDEX.txt").read_text()
    assert "kind export logs" in index
    assert "pilot-agent request --log_target=stderr GET config_dump" in index
    assert (dest / "cluster-nodes.txt").read_text().startswith("a0 ")
    assert (dest / "client-envoy-clusters.txt").read_text().count("custom-redis-cluster::") == 6
    assert all("--kubeconfig" in c for c in runner.commands() if c.startswith("kubectl"))


class SparePods(FakeApi):
    """The StatefulSet grown by two: eight pods, listed in no particular order."""

    def pods(self, namespace: str, selector: str):  # type: ignore[no-untyped-def]
        found = super().pods(namespace, selector)
        if selector != "app=redis-cluster":
            return found
        extra = [dataclasses.replace(found[0], name=f"redis-cluster-{i}", ip=f"10.244.0.{40 + i}")
                 for i in (7, 6)]
        return [*extra, *reversed(found)]


def test_spare_pods_run_beside_the_cluster_and_are_in_the_state(lab_home: Path) -> None:
    runner, api = RecordingRunner(), SparePods()
    options = UpOptions(images="upstream", name="k9", istio="tutorial", spare_pods=2)
    state = backend(runner, api).up(options, QUIET)
    (sts,) = [d for d in api.applied if d["kind"] == "StatefulSet"]
    assert sts["spec"]["replicas"] == 8
    create = next(c for c in runner.commands() if "--cluster create" in c)
    assert create.endswith(" ".join(f"{ip}:6379" for ip in POD_IPS))  # 0..5, in order
    assert state.spares == [
        {"name": "redis-cluster-6", "host": "10.244.0.46", "port": 6379},
        {"name": "redis-cluster-7", "host": "10.244.0.47", "port": 6379}]
    assert "(2 spare pods)" in backend(runner, api).dry_run(options)
