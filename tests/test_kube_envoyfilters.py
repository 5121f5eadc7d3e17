"""A kube lab's extra EnvoyFilters: `up --envoyfilter` and `reconfigure` apply them through
the Kubernetes API, and a lab is ready again once the client sidecar holds the sync marker of
the change, whatever the EnvoyFilters did to its redis proxy."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from lab import mutants
from lab.backends import UpOptions
from lab.backends.kube import KubeBackend, envoyfilters, tools
from lab.errors import LabError
from lab.manifests import Document
from lab.progress import Progress
from lab.state import LabState
from tests.kube_fakes import VIP, FakeApi, RecordingRunner, kinds

QUIET = Progress(quiet=True)
TCP_PROXY_LEFT = mutants.get("tcp-proxy-left").path  # a new name: added after the lab's own
SEED_ONE_REPLICA = mutants.get("seed-one-replica").path  # the lab's own name: replaces it


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lab_home: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tools, "resolve", lambda release, allow_download=True: release.name)
    monkeypatch.setattr(tools, "kubectl", lambda: "kubectl")


def dump(listeners: Sequence[tuple[str, list[str], bool]], clusters: Sequence[str]) -> str:
    """A config_dump with these listeners (name, filter names, active?) and clusters."""
    return json.dumps({"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
         "dynamic_active_clusters": [{"cluster": {"name": c}} for c in clusters]},
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
         "dynamic_listeners": [
             {"name": name, ("active_state" if active else "warming_state"): {"listener": {
                 "name": name, "filter_chains": [{"filters": [{"name": f} for f in filters]}]}}}
             for name, filters, active in listeners]},
    ]})


class SidecarOf(RecordingRunner):
    """The client sidecar as istiod would leave it: the marker of the last applied sync
    EnvoyFilter, and the redis proxy unless an applied EnvoyFilter replaced it."""

    def __init__(self, api: FakeApi, deliver: bool = True) -> None:
        super().__init__(formed=True)
        self.api, self.deliver = api, deliver

    def run(self, argv: Sequence[str], input: str | None = None, check: bool = True,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        if " ".join(argv).endswith("GET config_dump"):
            self.calls.append(list(argv))
            return subprocess.CompletedProcess(list(argv), 0, self._dump(), "")
        return super().run(argv, input, check, timeout)

    def _dump(self) -> str:
        live = {envoyfilters.identity(d): d for d in self.api.applied
                if d["kind"] == "EnvoyFilter"}
        for name in self.api.deleted:
            live = {k: v for k, v in live.items() if f"{k[0]}/{k[1]}" not in name}
        marker = live.get(("redis", envoyfilters.SYNC_NAME))
        names = []
        if marker is not None and self.deliver:
            names = [marker["spec"]["configPatches"][0]["patch"]["value"]["name"]]
        proxy = ("envoy.filters.network.tcp_proxy"
                 if ("istio-system", "mutant-tcp-proxy-left") in live
                 else "envoy.filters.network.redis_proxy")
        return dump([(f"{VIP}_6379", [proxy], True),
                     *((n, ["envoy.filters.network.tcp_proxy"], True) for n in names)],
                    ["custom-redis-cluster", *names])

    def commands(self) -> list[str]:
        return [" ".join(argv) for argv in self.calls]


def backend(runner: RecordingRunner, api: FakeApi) -> KubeBackend:
    return KubeBackend(False, runner=runner, api=api, sleep=lambda s: None)


def envoyfilters_applied(api: FakeApi) -> list[str]:
    return [r for r in kinds(api.applied) if r.startswith("EnvoyFilter")]


# --- the marker and its check ---------------------------------------------------------------

def test_the_sync_marker_adds_a_cluster_and_a_listener_that_binds_no_port() -> None:
    marker = envoyfilters.sync_marker(7)
    assert marker["metadata"] == {"name": "redis-mesh-lab-sync", "namespace": "redis"}
    assert marker["spec"]["workloadSelector"] == {"labels": {"app": "redis-client"}}
    cluster, listener = (p["patch"]["value"] for p in marker["spec"]["configPatches"])
    assert cluster["name"] == listener["name"] == "redis-mesh-lab-sync-7"
    assert listener["bind_to_port"] is False
    assert listener["filter_chains"][0]["filters"][0]["typed_config"]["cluster"] == \
        cluster["name"]


def test_synced_needs_the_marker_cluster_and_the_active_marker_listener() -> None:
    mark = "redis-mesh-lab-sync-3"
    assert envoyfilters.not_synced(dump([(mark, [], True)], [mark]), 3) is None
    assert "cluster: none, not redis-mesh-lab-sync-3" in str(
        envoyfilters.not_synced(dump([(mark, [], True)], []), 3))
    # istiod sends no listeners when a change leaves them as they were: the clusters alone
    # do not say the listeners of that push have arrived
    assert "active listener: redis-mesh-lab-sync-2, not redis-mesh-lab-sync-3" in str(
        envoyfilters.not_synced(dump([("redis-mesh-lab-sync-2", [], True)], [mark]), 3))
    assert "active listener: none" in str(
        envoyfilters.not_synced(dump([(mark, [], False)], [mark]), 3))  # still warming
    assert "not JSON" in str(envoyfilters.not_synced("upstream connect error", 3))


def test_stale_is_the_extra_envoyfilters_the_new_set_drops() -> None:
    def ef(namespace: str, name: str) -> Document:
        return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
                "metadata": {"name": name, "namespace": namespace}}

    before = [ef("istio-system", "custom-redis-cluster"), ef("istio-system", "add-redis-proxy"),
              ef("istio-system", "mutant-a"), ef("redis", envoyfilters.SYNC_NAME),
              {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "redis"}}]
    wanted = [ef("istio-system", "custom-redis-cluster"), ef("istio-system", "add-redis-proxy")]
    assert envoyfilters.stale(before, wanted) == [ef("istio-system", "mutant-a")]


# --- up --envoyfilter -----------------------------------------------------------------------

def test_up_with_a_mutant_is_ready_once_delivered_even_without_the_redis_proxy() -> None:
    api = FakeApi()
    runner = SidecarOf(api)
    options = UpOptions(images="upstream", name="km", istio="modern",
                        envoyfilters=(TCP_PROXY_LEFT,))
    state = backend(runner, api).up(options, QUIET)
    assert envoyfilters_applied(api) == [
        "EnvoyFilter istio-system/custom-redis-cluster", "EnvoyFilter istio-system/add-redis-proxy",
        "EnvoyFilter istio-system/mutant-tcp-proxy-left", "EnvoyFilter redis/redis-mesh-lab-sync"]
    assert api.applied[-2]["spec"]["configPatches"][0]["match"]["listener"]["name"] == \
        f"{VIP}_6379"  # the mutant rendered with the Service's cluster IP, as the lab's own
    assert state.envoyfilters == [str(TCP_PROXY_LEFT.resolve())]
    assert state.kube_facts().sync_generation == 1
    assert not any(c.endswith("GET clusters?format=json") for c in runner.commands())


def test_up_without_extra_envoyfilters_still_refuses_a_sidecar_without_the_redis_proxy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi()
    runner = SidecarOf(api)
    monkeypatch.setattr(runner, "_dump", lambda: dump(
        [(f"{VIP}_6379", ["envoy.filters.network.tcp_proxy"], True)], ["custom-redis-cluster"]))
    with pytest.raises(LabError, match=r"not envoy\.filters\.network\.redis_proxy"):
        backend(runner, api).up(UpOptions(images="upstream", name="kr", istio="modern"), QUIET)


def test_up_with_a_mutant_times_out_when_istiod_never_delivers() -> None:
    api = FakeApi()
    options = UpOptions(images="upstream", name="kt", istio="modern",
                        envoyfilters=(TCP_PROXY_LEFT,))
    with pytest.raises(LabError, match="the client sidecar's config_dump has "
                                       "the cluster and the active listener "
                                       "redis-mesh-lab-sync-1"):
        backend(SidecarOf(api, deliver=False), api).up(options, QUIET)


# --- reconfigure ----------------------------------------------------------------------------

def test_reconfigure_swaps_mutants_and_restores_the_lab_own_envoyfilters() -> None:
    api = FakeApi()
    runner = SidecarOf(api)
    kube = backend(runner, api)
    kube.up(UpOptions(images="upstream", name="kc", istio="modern"), QUIET)
    assert "EnvoyFilter redis/redis-mesh-lab-sync" not in kinds(api.applied)  # no mutant, no marker

    api.applied.clear()
    state = kube.reconfigure("kc", [TCP_PROXY_LEFT], QUIET)
    assert envoyfilters_applied(api)[-2:] == [
        "EnvoyFilter istio-system/mutant-tcp-proxy-left", "EnvoyFilter redis/redis-mesh-lab-sync"]
    assert state.kube_facts().sync_generation == 1
    assert "envoy.filters.network.tcp_proxy" in runner._dump()

    api.applied.clear()
    state = kube.reconfigure("kc", [SEED_ONE_REPLICA], QUIET)
    assert api.deleted == ["EnvoyFilter istio-system/mutant-tcp-proxy-left"]
    seed = next(d for d in api.applied if d["metadata"]["name"] == "custom-redis-cluster")
    assert seed["metadata"]["annotations"][mutants.EXPECT_FAIL] == ""  # the conforming copy
    assert state.kube_facts().sync_generation == 2

    api.applied.clear()
    api.deleted.clear()
    runner.calls.clear()
    state = kube.reconfigure("kc", [], QUIET)
    assert api.deleted == []  # seed-one-replica had the lab's own name: re-applied, not deleted
    own = next(d for d in api.applied if d["metadata"]["name"] == "custom-redis-cluster")
    assert "annotations" not in own["metadata"]
    assert state.envoyfilters == []
    # back to the lab itself: ready means what `up` means, the redis proxy and six hosts
    assert any(c.endswith("GET clusters?format=json") for c in runner.commands())
    saved = LabState.load("kc")
    assert saved is not None
    names = [d["metadata"]["name"] for d in saved.kube_facts().applied
             if d["kind"] == "EnvoyFilter"]
    assert "mutant-tcp-proxy-left" not in names and envoyfilters.SYNC_NAME in names


def test_a_failed_reconfigure_records_what_it_applied_and_uses_a_new_marker_next() -> None:
    api = FakeApi()
    runner = SidecarOf(api)
    kube = backend(runner, api)
    kube.up(UpOptions(images="upstream", name="kf", istio="modern"), QUIET)
    runner.deliver = False
    with pytest.raises(LabError, match="redis-mesh-lab-sync-1"):
        kube.reconfigure("kf", [TCP_PROXY_LEFT], QUIET)
    saved = LabState.load("kf")
    assert saved is not None and saved.kube_facts().sync_generation == 1
    assert "mutant-tcp-proxy-left" in [d["metadata"]["name"] for d in saved.kube_facts().applied]
    runner.deliver = True
    kube.reconfigure("kf", [], QUIET)
    assert api.applied[-1]["spec"]["configPatches"][0]["patch"]["value"]["name"] == \
        "redis-mesh-lab-sync-2"
    assert "EnvoyFilter istio-system/mutant-tcp-proxy-left" in api.deleted


def test_reconfigure_refuses_a_lab_that_is_not_up() -> None:
    with pytest.raises(LabError, match="lab 'nope' is not up on backend kind"):
        backend(RecordingRunner(), FakeApi()).reconfigure("nope", [], QUIET)

