"""Every manifest the kube backend applies, validated offline against the Kubernetes schema
of its target version (kubernetes-validate); the EnvoyFilters against the tutorial CRD."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions, major_minor

from lab import manifests, model, versions
from lab.backends import UpOptions
from lab.backends.kube import steps
from lab.backends.kube.layout import kind_layout
from lab.backends.kube.plan import Apply

VIP = "10.96.0.50"  # a cluster IP from kind's default service range 10.96.0.0/12
PROFILES = sorted(versions.ISTIO_PROFILES.values(), key=lambda p: p.name)
# Kinds Kubernetes' own schema cannot know: Istio's CRDs.
ISTIO_KINDS = {"EnvoyFilter", "PeerAuthentication"}
# Every API group/version used here was GA before Kubernetes 1.21 (apps/v1 since 1.9,
# apiextensions.k8s.io/v1 since 1.16), so the tutorial's 1.21 cluster serves them all.
SERVED_BY_1_21 = {"v1", "apps/v1", "apiextensions.k8s.io/v1"}


def schema_version(target: str) -> str:
    """The target's schema, or the oldest kubernetes-validate ships (1.25 for 1.21)."""
    oldest = all_versions()[0]
    return target if major_minor(target) >= major_minor(oldest) else oldest


def applied_documents(profile: versions.IstioProfile, mirror: bool) -> list[dict[str, Any]]:
    """What `up` applies, in order, with the run-time VIP filled in."""
    options = UpOptions(istio=profile.name, mirror=mirror)
    docs: list[dict[str, Any]] = []
    for step in steps.build(kind_layout("schema"), profile, options):
        if isinstance(step, Apply):
            docs += (step.render({"redis_vip": VIP, "redis_image": versions.REDIS_IMAGE})
                     if step.render else step.documents)
    return docs


@pytest.mark.parametrize("mirror", [True, False])
@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_kubernetes_objects_match_the_target_schema(profile: versions.IstioProfile,
                                                    mirror: bool) -> None:
    version = schema_version(profile.kubernetes)
    checked = []
    for doc in applied_documents(profile, mirror):
        if doc["kind"] in ISTIO_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked.append(doc["kind"])
    expected = {"Namespace", "ConfigMap", "StatefulSet", "Service", "Deployment"}
    assert expected <= set(checked)
    assert ("CustomResourceDefinition" in checked) == profile.tutorial_crd


def test_tutorial_schema_is_the_oldest_available_and_apis_exist_in_1_21() -> None:
    assert schema_version(versions.TUTORIAL.kubernetes) == all_versions()[0]
    assert schema_version(versions.MODERN.kubernetes) == versions.MODERN.kubernetes
    used = {d["apiVersion"] for d in applied_documents(versions.TUTORIAL, True)
            if d["kind"] not in ISTIO_KINDS}
    assert used <= SERVED_BY_1_21


def test_a_broken_manifest_is_rejected() -> None:
    doc = applied_documents(versions.MODERN, True)
    sts = next(d for d in doc if d["kind"] == "StatefulSet")
    broken = {**sts, "spec": {**sts["spec"], "replicas": "six"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, versions.MODERN.kubernetes, strict=True)


def _crd_schema() -> dict[str, Any]:
    crd = manifests.load(model.TUTORIAL_CRD).documents[0]
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("mirror", [True, False])
@pytest.mark.parametrize("read_policy", model.READ_POLICIES)
def test_envoyfilters_are_admitted_by_the_tutorial_crd(read_policy: str, mirror: bool) -> None:
    schema = _crd_schema()
    enum = schema["properties"]["spec"]["properties"]["configPatches"]["items"]["properties"][
        "patch"]["properties"]["operation"]["enum"]
    assert "REPLACE" in enum
    for doc in model.load_spec(VIP, read_policy, mirror).envoyfilter_documents:
        jsonschema.validate(doc, schema)


def test_a_crd_without_replace_would_reject_the_proxy_filter() -> None:
    schema = _crd_schema()
    ops = schema["properties"]["spec"]["properties"]["configPatches"]["items"]["properties"][
        "patch"]["properties"]["operation"]
    ops["enum"] = [op for op in ops["enum"] if op != "REPLACE"]  # Istio 1.7.3's own CRD
    proxy = model.load_spec(VIP).envoyfilter_documents[-1]
    with pytest.raises(jsonschema.ValidationError, match="REPLACE"):
        jsonschema.validate(proxy, schema)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_kind_configs_pin_the_node_image(profile: versions.IstioProfile) -> None:
    text = steps.kind_config_text(kind_layout("cfg"), profile)
    config = yaml.safe_load(text)
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    assert config["name"] == "rml-cfg"
    assert [n["image"] for n in config["nodes"]] == [profile.node_image]
    assert re.fullmatch(r"kindest/node:v[\d.]+@sha256:[0-9a-f]{64}", profile.node_image)
    assert profile.node_image.startswith(f"kindest/node:v{profile.kubernetes}@")


def test_tutorial_profile_fits_istio_1_7() -> None:
    minor = tuple(int(x) for x in versions.TUTORIAL.kubernetes.split(".")[:2])
    assert (1, 19) <= minor <= (1, 21)  # kind on cgroup v2 needs 1.19+; 1.22 drops v1beta1
    assert versions.TUTORIAL.istioctl.version == "1.7.3"
    assert "values.global.jwtPolicy=first-party-jwt" in versions.TUTORIAL.install_flags
