from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lab import manifests, model
from lab.errors import ManifestError
from lab.paths import manifests_dir


def test_render_fills_placeholders_and_names_missing_ones():
    assert manifests.render_text("a ${X} b", {"X": "1"}, "f.yaml") == "a 1 b"
    with pytest.raises(ManifestError, match=r"f\.yaml: no value for placeholder \$\{Y\}"):
        manifests.render_text("${Y}", {}, "f.yaml")


def test_every_shipped_manifest_renders_without_placeholders_left():
    values = model.render_values("10.96.0.50", "REPLICA")
    files = sorted(p.relative_to(manifests_dir()) for sub in ("k8s", "istio")
                   for p in (manifests_dir() / sub).rglob("*.yaml"))
    assert len(files) >= 9
    for relpath in files:
        manifest = manifests.load(relpath, values)
        assert manifest.documents, relpath


def test_envoyfilters_are_rendered_with_the_vip_and_policy():
    spec = model.load_spec("10.96.0.50", "PREFER_MASTER", mirror=True)
    proxy = spec.envoyfilter_documents[1]["spec"]["configPatches"][0]
    assert proxy["match"]["listener"]["name"] == "10.96.0.50_6379"
    settings = proxy["patch"]["value"]["typed_config"]["settings"]
    assert settings["read_policy"] == "PREFER_MASTER"
    assert proxy["patch"]["value"]["typed_config"]["@type"].endswith(".v3.RedisProxy")


def test_mirror_variant_differs_only_by_the_mirror_policy():
    with_mirror = model.load_spec("10.0.0.1", mirror=True).envoyfilter_documents[1]
    without = model.load_spec("10.0.0.1", mirror=False).envoyfilter_documents[1]
    route = with_mirror["spec"]["configPatches"][0]["patch"]["value"]["typed_config"][
        "prefix_routes"]["catch_all_route"]
    mirror = route.pop("request_mirror_policy")
    assert mirror == [{"cluster": "outbound|6379||redis-mirror.redis.svc.cluster.local",
                       "exclude_read_commands": True}]
    assert with_mirror == without


def test_seed_names_resolve_through_the_headless_governing_service():
    """The tutorial's seeds only resolve if the StatefulSet's serviceName is headless."""
    spec = model.load_spec("10.0.0.1")
    sts = spec.statefulset
    governing = spec.service(sts.service_name)
    assert governing.headless
    cluster = spec.envoyfilter_documents[0]["spec"]["configPatches"][0]["patch"]["value"]
    seeds = [e["endpoint"]["address"]["socket_address"]["address"]
             for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]
    assert [model.pod_ordinal(seed, sts) for seed in seeds] == list(range(sts.replicas))


def test_unknown_read_policy_lists_the_valid_ones():
    with pytest.raises(ManifestError, match="valid: MASTER, PREFER_MASTER, REPLICA"):
        model.load_spec("10.0.0.1", "SOMETIMES")


@pytest.fixture
def broken_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "manifests"
    shutil.copytree(manifests_dir(), copy)
    monkeypatch.setenv("REDIS_MESH_LAB_MANIFESTS", str(copy))
    return copy


def test_malformed_yaml_names_the_file_and_line(broken_copy: Path):
    target = broken_copy / "k8s" / "redis-mirror.yaml"
    target.write_text(target.read_text() + "\n  : : [unclosed\n")
    with pytest.raises(ManifestError, match=r"k8s/redis-mirror\.yaml: line \d+ malformed YAML"):
        model.load_spec("10.0.0.1")


def test_unknown_placeholder_names_the_file(broken_copy: Path):
    target = broken_copy / "istio" / "envoyfilter-redis-proxy-with-mirror.yaml"
    target.write_text(target.read_text().replace("${REDIS_VIP}", "${REDIS_CLUSTER_IP}"))
    with pytest.raises(ManifestError, match=r"envoyfilter-redis-proxy-with-mirror\.yaml: no "
                                            r"value for placeholder \$\{REDIS_CLUSTER_IP\}"):
        model.load_spec("10.0.0.1")


def test_placeholder_surviving_render_is_an_error(broken_copy: Path):
    target = broken_copy / "k8s" / "redis-client.yaml"
    # A value that itself looks like a placeholder must not slip through.
    with pytest.raises(ManifestError, match=r"redis-client\.yaml: placeholder \$\{LEFT\} left"):
        manifests.load(target, {"REDIS_IMAGE": "${LEFT}"})


def test_governing_service_must_be_headless(broken_copy: Path):
    target = broken_copy / "k8s" / "redis-cluster.yaml"
    target.write_text(target.read_text().replace("serviceName: redis-cluster-headless",
                                                 "serviceName: redis-cluster"))
    with pytest.raises(ManifestError, match="must name a headless Service"):
        model.load_spec("10.0.0.1")
