"""`up --backend kind|existing --dry-run`: the exact ordered plan, without kind or istioctl."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab import paths, versions
from lab.backends import UpOptions, get_backend
from lab.backends.kube import steps, toolchain, tools
from lab.errors import LabError


@pytest.fixture(autouse=True)
def _no_tools(monkeypatch: pytest.MonkeyPatch, lab_home: Path) -> None:
    """A dry run must not look for, run or download kind/istioctl."""
    def refuse(*args: object, **kwargs: object) -> str:
        raise AssertionError("a dry run resolved a binary")

    monkeypatch.setattr(tools, "resolve", refuse)
    monkeypatch.setattr(tools, "fetch", refuse)
    monkeypatch.setattr(tools, "kubectl", refuse)


def commands(plan: str) -> list[str]:
    return [line.strip()[2:] for line in plan.splitlines() if line.strip().startswith("$ ")]

SMALL = " ".join((*steps.SMALL_REQUESTS, *steps.ALL_STATS))


def titles(plan: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^\s*\d+\. (.+)$", plan, re.M)]


def test_tutorial_plan_commands_in_order(lab_home: Path) -> None:
    plan = get_backend("kind").dry_run(UpOptions(images="upstream", name="t1", istio="tutorial"))
    kc = str(lab_home / "t1" / "kubeconfig")
    k = f"kubectl --kubeconfig {kc} --cache-dir {lab_home}/t1/kube-cache --context kind-rml-t1 " \
        "-n redis exec"
    assert commands(plan) == [
        f"kind create cluster --name rml-t1 --config {lab_home}/t1/kind-config.yaml "
        f"--kubeconfig {kc} --wait 300s",
        f"istioctl install --skip-confirmation --set components.pilot.hub=zhaohuabing "
        f"--set components.pilot.tag=1.7.3-enable-ef-replace "
        f"--set values.global.jwtPolicy=first-party-jwt {SMALL} --kubeconfig {kc} "
        "--context kind-rml-t1",
        f"{k} redis-cluster-0 -c redis -- redis-cli --cluster create --cluster-replicas 1 "
        "--cluster-yes <podIP:6379 of each pod -l app=redis-cluster, by name>",
    ]
    assert f"before each retry $ kind delete cluster --name rml-t1 --kubeconfig {kc}" in plan
    assert titles(plan) == [
        "Find the binaries", "Write the kind cluster config",
        "Create kind cluster rml-t1 (Kubernetes 1.21.14)",
        "Install Istio 1.7.3 (istiod and its sidecar injector)",
        "Wait for istiod", "Apply the EnvoyFilter CRD that admits REPLACE", "Wait for the CRD",
        "Create the redis namespace (istio-injection=enabled)",
        "Allow plaintext to the Redis pods (PERMISSIVE mTLS)", "Deploy the Redis StatefulSet",
        "Deploy the client", "Deploy the mirror", "Wait for the Redis pods",
        "Wait for redis-client", "Wait for redis-mirror", "Find the Redis pod IPs",
        "Check whether the cluster is already formed",
        "Create the Redis Cluster (3 masters, 1 replica each)",
        "Wait for cluster_state:ok and every replica",
        "Find the redis-cluster Service's cluster IP", "Apply the EnvoyFilters",
        "Find the client pod", "Wait for the client sidecar's Redis proxy", "Read the topology",
        "Find the mirror pod",
    ]
    assert versions.TUTORIAL.node_image in plan
    assert "kind v0.20.0" in plan


def test_modern_plan_uses_upstream_pilot_and_no_crd(lab_home: Path) -> None:
    # modern is the default
    plan = get_backend("kind").dry_run(UpOptions(images="upstream", name="m1"))
    istio = [c for c in commands(plan) if c.startswith("istioctl")]
    assert istio == [f"istioctl install --skip-confirmation --set profile=minimal {SMALL} "
                     f"--kubeconfig "
                     f"{lab_home}/m1/kubeconfig --context kind-rml-m1"]
    assert "zhaohuabing" not in plan
    assert "CustomResourceDefinition" not in plan
    assert versions.MODERN.node_image in plan
    assert "Kubernetes 1.35.0" in plan


@pytest.mark.parametrize("profile", ["tutorial", "modern"])
def test_every_command_uses_the_lab_kubeconfig(profile: str, lab_home: Path) -> None:
    plan = get_backend("kind").dry_run(UpOptions(images="upstream", name="iso", istio=profile))
    kubeconfig = f"--kubeconfig {lab_home}/iso/kubeconfig"
    for command in commands(plan):
        if command.startswith(("kubectl", "istioctl", "kind create", "kind delete")):
            assert kubeconfig in command, command
    assert ".kube/config" not in plan.replace("~/.kube/config is never", "")


@pytest.mark.parametrize("profile", ["tutorial", "modern"])
def test_every_wait_has_condition_and_timeout(profile: str) -> None:
    plan = get_backend("kind").dry_run(UpOptions(images="upstream", istio=profile))
    waits = [line.strip() for line in plan.splitlines() if line.strip().startswith("wait until")]
    assert len(waits) == 6 + (1 if profile == "tutorial" else 0)
    assert all(re.search(r"\(timeout \d+s, polled every \d+s\)$", w) for w in waits)


def test_envoyfilters_shown_with_the_run_time_marker() -> None:
    plan = get_backend("kind").dry_run(UpOptions(images="upstream", read_policy="PREFER_MASTER"))
    assert "name: <clusterIP of svc/redis-cluster>_6379" in plan
    assert "re-rendered at run time" in plan
    assert "read_policy: PREFER_MASTER" in plan
    assert "${" not in plan.replace("(${REDIS_VIP})", "")


def test_every_manifest_is_shown_rendered() -> None:
    plan = get_backend("kind").dry_run(UpOptions(images="upstream", istio="tutorial"))
    for source in ("istio/tutorial-1.7/envoyfilter-crd.yaml", "k8s/namespace.yaml",
                   "istio/peer-authentication.yaml", "k8s/redis-cluster.yaml",
                   "k8s/redis-client.yaml", "k8s/redis-mirror.yaml",
                   "istio/envoyfilter-custom-redis-cluster.yaml + "
                   "istio/envoyfilter-redis-proxy-with-mirror.yaml"):
        assert f"up to 3 attempts): {source}\n" in plan
    assert f"image: {versions.REDIS_IMAGE}" in plan
    assert "istio-injection: enabled" in plan
    assert "mode: PERMISSIVE" in plan


def test_no_mirror_and_preload() -> None:
    plan = get_backend("kind").dry_run(UpOptions(images="upstream", name="p", mirror=False,
                                                 preload_images=True))
    assert "k8s/redis-mirror.yaml" not in plan
    assert "envoyfilter-redis-proxy.yaml" in plan
    assert "Find the mirror pod" not in plan
    loads = [c for c in commands(plan) if c.startswith("kind load")]
    assert loads == [f"kind load docker-image {image} --name rml-p"
                     for image in (versions.REDIS_IMAGE, *versions.MODERN.istio_images)]


def test_existing_needs_an_explicit_kubeconfig(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with pytest.raises(LabError, match="needs --kubeconfig"):
        get_backend("existing").dry_run(UpOptions(images="upstream"))


def test_existing_plan_installs_nothing_cluster_wide(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "their-kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    plan = get_backend("existing").dry_run(
        UpOptions(images="upstream", name="ex", kubeconfig=str(kubeconfig), context="prod-like"))
    assert not [c for c in commands(plan) if c.startswith(("kind", "istioctl"))]
    assert f"--kubeconfig {kubeconfig} --cache-dir {paths.lab_dir('ex')}/kube-cache " \
        "--context prod-like" in plan
    assert "Wait for istiod" in plan
    assert "it is not installed" in plan and "CRD is replaced" not in plan


def test_unknown_profile_is_one_line_error() -> None:
    with pytest.raises(LabError, match="unknown Istio profile 'ancient'"):
        get_backend("kind").dry_run(UpOptions(images="upstream", istio="ancient"))


def test_cli_dry_run_prints_the_plan_and_creates_nothing(tmp_path: Path) -> None:
    from tests.conftest import cli

    home = tmp_path / "cli-labs"
    result = cli("up", "--backend", "kind", "--istio", "tutorial", "--dry-run", "--name", "dr",
                 env={"REDIS_MESH_LAB_HOME": str(home), "PATH": "/nonexistent"})
    assert result.returncode == 0, result.stderr
    assert "kind create cluster --name rml-dr" in result.stdout
    assert "Wait for the client sidecar's Redis proxy" in result.stdout
    assert not home.exists()


def test_the_default_kind_plan_uses_what_is_built_here(lab_home: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """--images local with the modern profile: kind's node image, the lab's images and
    istioctl from this machine; printing the plan builds nothing."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("REDIS_MESH_LAB_CACHE", str(cache))
    plan = get_backend("kind").dry_run(UpOptions(name="l1"))
    assert not cache.exists()
    kc = f"{lab_home}/l1/kubeconfig"
    assert f"kind create cluster --name rml-l1 --image {toolchain.node_image()} --config " \
           f"{lab_home}/l1/kind-config.yaml --kubeconfig {kc} --wait 300s" in commands(plan)
    assert "kindest/node" not in plan
    assert f"kind load docker-image --name rml-l1 {steps.LAB_IMAGES.label}" in commands(plan)
    istio = [c for c in commands(plan) if c.startswith("istioctl")]
    assert istio == [f"istioctl install --skip-confirmation --set profile=minimal {SMALL} "
                     f"--kubeconfig {kc} --context kind-rml-l1 "
                     f"{' '.join(steps.UPSTREAM_ENVOY)} {steps.ISTIO_IMAGE_FLAGS.label}"]
    assert "values.pilot.env.PILOT_ENABLE_METADATA_EXCHANGE=false" in istio[0]
    assert titles(plan)[:8] == [
        "Find the binaries", "Build the lab's images",
        "Write the pod network config (ptp + host-local)", "Write the kind cluster config",
        f"Create kind cluster rml-l1 (Kubernetes {versions.KUBERNETES_BUILD_VERSION})",
        "Remove kind's local-path storage (not built here; unused)",
        "Load the lab's images into the node",
        f"Install Istio {versions.ISTIOD_RELEASE} (istiod and its sidecar injector)"]
    assert f"image: {steps.REDIS_IMAGE.label}" in plan  # rendered with the tag at run time
    assert "tools install kubernetes" in plan
