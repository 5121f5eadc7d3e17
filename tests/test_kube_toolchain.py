"""The Kubernetes toolchain's plan (`tools install kubernetes`): which steps, in which order,
what a cached step skips, how an interrupted step starts over, and the host-restriction
detection. Nothing here builds anything: the steps are replaced by recording fakes."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab import cli, versions
from lab.backends.kube import hostcheck, toolchain
from lab.errors import LabError

RESTRICTED_STATUS = """Name:\tcat
CapInh:\t0000000000000000
CapPrm:\t000001fffeffffff
CapEff:\t000001fffeffffff
CapBnd:\t000001fffeffffff
CapAmb:\t0000000000000000
"""
ORDINARY_STATUS = RESTRICTED_STATUS.replace("000001fffeffffff", "000001ffffffffff")


def facts(status: str = ORDINARY_STATUS, *, lib_modules: bool = True,
          cgroup_v2: bool = True, docker: str | None = "27.0") -> hostcheck.HostFacts:
    return hostcheck.HostFacts(cap_bnd=hostcheck.cap_bounding_set(status),
                               lib_modules=lib_modules, cgroup_v2=cgroup_v2, docker=docker)


# --------------------------------------------------------------------------- host detection


def test_capbnd_is_read_from_the_status_text() -> None:
    assert hostcheck.cap_bounding_set(RESTRICTED_STATUS) == 0x000001FFFEFFFFFF
    assert hostcheck.cap_bounding_set("Name:\tx\n") is None


def test_a_bounding_set_without_cap_sys_resource_means_no_privileged() -> None:
    restricted = facts(RESTRICTED_STATUS, lib_modules=False, cgroup_v2=False)
    assert not restricted.privileged_works
    assert restricted.needs_wrapper
    found = " | ".join(restricted.workarounds())
    assert "CAP_SYS_RESOURCE" in found and "cgroup v1" in found and "/lib/modules" in found


def test_an_ordinary_host_gets_no_workaround() -> None:
    ordinary = facts()
    assert ordinary.privileged_works and not ordinary.needs_wrapper
    assert ordinary.workarounds() == []
    assert "kind runs unmodified" in ordinary.describe()


def test_unknown_capabilities_are_not_taken_for_a_restriction() -> None:
    assert facts("no status here").privileged_works


def test_detect_reads_the_given_status_file(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    status = tmp_path / "status"
    status.write_text(RESTRICTED_STATUS)
    monkeypatch.setattr(hostcheck, "_docker_version", lambda: ("20.10", ""))
    assert not hostcheck.detect(status).privileged_works


def test_no_docker_engine_is_unusable() -> None:
    assert facts(docker=None).unusable() is not None
    assert facts().unusable() is None


# --------------------------------------------------------------------------- docker wrapper

KIND_RUN = ["run", "--name", "c1", "--hostname", "c1", "--privileged",
            "--security-opt", "seccomp=unconfined", "--volume", "/var",
            "--volume", "/lib/modules:/lib/modules:ro", "-e", "X", "node:img"]


def test_the_wrapper_changes_nothing_on_an_ordinary_host() -> None:
    assert toolchain.rewrite_docker_args(KIND_RUN, facts(), "/r.sh") == KIND_RUN
    exec_args = ["exec", "--privileged", "c1", "true"]
    assert toolchain.rewrite_docker_args(exec_args, facts(), "/r.sh") == exec_args


def test_the_wrapper_rewrites_privileged_and_the_modules_mount_where_needed() -> None:
    restricted = facts(RESTRICTED_STATUS, lib_modules=False, cgroup_v2=False)
    args = toolchain.rewrite_docker_args(KIND_RUN, restricted, "/r.sh")
    assert "--privileged" not in args
    assert "--cap-drop=SYS_RESOURCE" in args and "--cap-add=ALL" in args
    assert not any(a.startswith("/lib/modules") for a in args)
    assert args[-3:] == ["--entrypoint", "/kind/rml-cgroup-rw", "node:img"]
    assert "/r.sh:/kind/rml-cgroup-rw:ro" in args
    assert toolchain.rewrite_docker_args(["exec", "--privileged", "c1", "true"], restricted,
                                         "/r.sh") == ["exec", "c1", "true"]
    assert toolchain.rewrite_docker_args(["ps", "-a"], restricted, "/r.sh") == ["ps", "-a"]


def test_the_cgroup_remount_is_for_cgroup_v1_only() -> None:
    v2 = facts(RESTRICTED_STATUS, cgroup_v2=True)
    args = toolchain.rewrite_docker_args(KIND_RUN, v2, "/r.sh")
    assert "--entrypoint" not in args and args[-1] == "node:img"
    assert "/lib/modules:/lib/modules:ro" in args  # it exists on that host


def test_kind_config_asks_for_restrict_oom_score_adj_only_where_needed(tmp_path: Path) -> None:
    conflist = tmp_path / "ptp.conflist"
    ordinary = toolchain.kind_config(facts(), conflist)
    assert "restrict_oom_score_adj" not in ordinary
    assert "disableDefaultCNI: true" in ordinary and str(conflist) in ordinary
    restricted = toolchain.kind_config(facts(RESTRICTED_STATUS), conflist)
    assert "restrict_oom_score_adj = true" in restricted
    assert "disableDefaultCNI" not in toolchain.kind_config(facts(), None)
    plugins = json.loads(toolchain.ptp_conflist())["plugins"]
    assert [p["type"] for p in plugins] == ["ptp", "portmap"]


# --------------------------------------------------------------------------- the real plan


def test_the_steps_are_in_an_order_where_each_needs_only_earlier_ones() -> None:
    names = [s.name for s in toolchain.STEPS]
    assert names[:3] == ["kind", "kubernetes-source", "kube-apiserver"]
    assert names[-3:] == ["images", "server-tarball", "node-image"]
    for index, step in enumerate(toolchain.STEPS):
        assert set(step.needs) <= set(names[:index]), step.name
    assert len(set(names)) == len(names)


def test_keys_are_the_pinned_versions() -> None:
    by = toolchain.STEP_BY_NAME
    assert by["kind"].key == versions.KIND_BUILD_VERSION == "v0.33.0"
    assert by["kube-apiserver"].key == versions.KUBERNETES_BUILD_VERSION == "v1.34.2"
    assert by["etcd"].key == "v3.6.5" and by["coredns"].key == "v1.12.1"
    assert by["containerd"].key.startswith("v2.")
    assert toolchain.node_image().startswith("redis-mesh-lab/kind-node:v1.34.2-")


def test_nothing_cached_plans_every_step() -> None:
    planned = toolchain.plan(toolchain.STEPS, lambda s: False)
    assert [p.step.name for p in planned] == [s.name for s in toolchain.STEPS]
    assert not any(p.cached for p in planned)


def test_everything_cached_plans_nothing() -> None:
    assert all(p.cached for p in toolchain.plan(toolchain.STEPS, lambda s: True))


def test_a_rebuilt_step_rebuilds_what_is_made_of_it() -> None:
    planned = toolchain.plan(toolchain.STEPS, lambda s: s.name != "kube-apiserver")
    todo = [p.step.name for p in planned if not p.cached]
    assert todo == ["kube-apiserver", "images", "server-tarball", "node-image"]


def test_a_missing_base_image_rebuilds_only_the_node_image_after_it() -> None:
    planned = toolchain.plan(toolchain.STEPS, lambda s: s.name != "base-image")
    assert [p.step.name for p in planned if not p.cached] == ["base-image", "node-image"]


def test_a_step_needing_a_later_one_is_refused() -> None:
    a = toolchain.Step("a", "1", "", lambda c, o: None, needs=("b",))
    b = toolchain.Step("b", "1", "", lambda c, o: None)
    with pytest.raises(ValueError, match="needs b"):
        toolchain.plan([a, b], lambda s: False)


def test_an_image_step_is_complete_only_while_its_image_exists(tmp_path: Path) -> None:
    step = toolchain.STEP_BY_NAME["node-image"]
    toolchain.step_dir(tmp_path, step).mkdir(parents=True)
    assert not toolchain.is_complete(tmp_path, step, lambda tag: True)
    toolchain.marker(tmp_path, step).write_text("{}")
    assert toolchain.is_complete(tmp_path, step, lambda tag: True)
    assert not toolchain.is_complete(tmp_path, step, lambda tag: False)


# --------------------------------------------------------------------------- running a plan


@pytest.fixture
def fake_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Three recording steps in a temporary cache, on a host that passes every check."""
    calls: list[str] = []

    def builder(name: str) -> Callable[[toolchain.Context, Path], None]:
        def build(ctx: toolchain.Context, out: Path) -> None:
            calls.append(name)
            (out / "made").write_text(name)
        return build

    steps = [toolchain.Step("one", "v1", "first", builder("one")),
             toolchain.Step("two", "v2", "second", builder("two"), needs=("one",),
                            component="pair"),
             toolchain.Step("three", "v3", "third", builder("three"), needs=("two",),
                            component="pair")]
    monkeypatch.setenv("REDIS_MESH_LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(toolchain, "STEPS", steps)
    monkeypatch.setattr(toolchain, "STEP_BY_NAME", {s.name: s for s in steps})
    monkeypatch.setattr(hostcheck, "detect", facts)
    monkeypatch.setattr(toolchain, "go_binary", lambda: "/usr/bin/go")
    monkeypatch.setattr(toolchain.shutil, "which", lambda name, **kw: f"/usr/bin/{name}")
    return calls


def test_install_builds_in_order_then_is_a_no_op(fake_steps: list[str],
                                                 tmp_path: Path) -> None:
    lines: list[str] = []
    toolchain.install(lines.append)
    assert fake_steps == ["one", "two", "three"]
    assert any("one" in line and "done in" in line for line in lines)
    assert (tmp_path / "kubernetes" / "two-v2" / ".done").is_file()
    lines.clear()
    toolchain.install(lines.append)
    assert fake_steps == ["one", "two", "three"]  # nothing built again
    cached = [line for line in lines if "cached" in line]
    assert len(cached) == 3  # one line per component: one, pair, the node image line
    assert cached[0].startswith("one") and cached[1].startswith("pair")


def test_an_interrupted_step_starts_over_and_keeps_what_was_done(
        fake_steps: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(ctx: toolchain.Context, out: Path) -> None:
        (out / "half").write_text("x")
        raise KeyboardInterrupt
    real_two = toolchain.STEPS[1]
    toolchain.STEPS[1] = toolchain.Step("two", "v2", "second", interrupted, needs=("one",))
    with pytest.raises(KeyboardInterrupt):
        toolchain.install(lambda line: None)
    two = tmp_path / "kubernetes" / "two-v2"
    assert (two / "half").exists() and not (two / ".done").exists()
    toolchain.STEPS[1] = real_two  # the fixture's own list: restored with the module's
    lines: list[str] = []
    toolchain.install(lines.append)
    assert fake_steps == ["one", "two", "three"]  # one was not rebuilt
    assert not (two / "half").exists() and (two / ".done").is_file()
    assert any("one" in line and line.endswith("cached") for line in lines)


def test_a_host_without_docker_is_one_line_and_exit_2(
        fake_steps: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(hostcheck, "detect", lambda: facts(docker=None))
    assert cli.main(["tools", "install", "kubernetes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Docker engine" in err[0]
    assert fake_steps == []


def test_an_unknown_step_is_refused(fake_steps: list[str]) -> None:
    with pytest.raises(LabError, match="no step nope"):
        toolchain.install(lambda line: None, only=["nope"])


def test_cli_dispatches_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[bool] = []

    def install(say: Callable[[str], None]) -> float:
        called.append(True)
        return 0.0
    monkeypatch.setattr(toolchain, "install", install)
    assert cli.main(["tools", "install", "kubernetes"]) == 0
    assert called == [True]


# --------------------------------------------------------------------------- pure helpers

GOMOD = """module k8s.io/kubernetes

go 1.24.0

require (
\tgithub.com/foo/bar v1.2.3
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0 // indirect
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/other/x => github.com/other/x v1.0.0
)
"""


def test_unstage_requires_the_published_staging_modules() -> None:
    result = toolchain.unstage(GOMOD, toolchain.staging_version("v1.34.2"))
    assert "./staging" not in result
    assert "\tk8s.io/api v0.34.2\n" in result
    assert "\tk8s.io/client-go v0.34.2 // indirect\n" in result
    assert "github.com/foo/bar v1.2.3" in result
    assert "github.com/other/x => github.com/other/x v1.0.0" in result


def test_kubeadms_images_get_our_tags_or_an_error() -> None:
    required = ["registry.k8s.io/kube-apiserver:v1.34.2",
                "registry.k8s.io/kube-controller-manager:v1.34.2",
                "registry.k8s.io/kube-scheduler:v1.34.2", "registry.k8s.io/kube-proxy:v1.34.2",
                "registry.k8s.io/coredns/coredns:v1.12.1", "registry.k8s.io/pause:3.10.1",
                "registry.k8s.io/etcd:3.6.5-0"]
    tags = toolchain.assign_tags(required)
    assert tags["etcd"] == ["registry.k8s.io/etcd:3.6.5-0"]
    assert "registry.k8s.io/pause:3.10.1" in tags["pause"]
    with pytest.raises(LabError, match="etcd"):
        toolchain.assign_tags(["registry.k8s.io/etcd:3.5.21-0"])
    with pytest.raises(LabError, match="does not build"):
        toolchain.assign_tags(["registry.k8s.io/something:v1"])


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_repack_puts_repositories_first_with_every_tag(tmp_path: Path) -> None:
    saved = tmp_path / "saved.tar"
    manifest = [{"Config": "a.json", "RepoTags": ["registry.k8s.io/etcd:3.6.5-0"],
                 "Layers": ["aaa/layer.tar"]},
                {"Config": "b.json", "RepoTags": ["registry.k8s.io/pause:3.10.1",
                                                  "kindest/kindnetd:v1"],
                 "Layers": ["bbb/layer.tar"]}]
    with tarfile.open(saved, "w") as tar:
        _tar_member(tar, "aaa/layer.tar", b"a")
        _tar_member(tar, "bbb/layer.tar", b"b")
        _tar_member(tar, "manifest.json", json.dumps(manifest).encode())
        _tar_member(tar, "repositories", b"{}")
    out = tmp_path / "out.tar"
    toolchain.repack_with_repositories(saved, out, ["registry.k8s.io/etcd:3.6.5-0",
                                                    "registry.k8s.io/pause:3.10.1",
                                                    "docker.io/kindest/kindnetd:v1"])
    with tarfile.open(out) as tar:
        names = tar.getnames()
        handle = tar.extractfile("repositories")
        assert handle is not None
        repositories = json.loads(handle.read())
    assert names[0] == "repositories" and names.count("repositories") == 1
    assert repositories == {"registry.k8s.io/etcd": {"3.6.5-0": "aaa"},
                            "registry.k8s.io/pause": {"3.10.1": "bbb"},
                            "docker.io/kindest/kindnetd": {"v1": "bbb"}}


def test_cri_base_spec_adds_kinds_hook_and_drops_rlimits() -> None:
    spec: dict[str, Any] = {"process": {"rlimits": [{"type": "RLIMIT_NOFILE"}], "cwd": "/"},
            "hooks": {"createContainer": [{"path": "/x"}]}}
    result = toolchain.cri_base_spec(spec)
    assert "rlimits" not in result["process"]  # type: ignore[operator]
    assert result["hooks"] == {"createContainer": [  # type: ignore[comparison-overlap]
        {"path": "/x"}, {"path": "/kind/bin/mount-product-files.sh"}]}
    assert "rlimits" in spec["process"]  # the input is left alone


def test_the_debian_mirror_comes_from_apts_sources(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n")
    assert toolchain.debian_mirror([deb822]) == "http://mirror.example/debian"
    legacy = tmp_path / "sources.list"
    legacy.write_text("deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert toolchain.debian_mirror([tmp_path / "absent", legacy]) == \
        "http://other.example/debian"
    assert toolchain.debian_mirror([]) == "http://deb.debian.org/debian"


# --------------------------------------------------------------------------- wrapper, images


def test_the_written_wrapper_execs_the_real_docker_with_rewritten_arguments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real-bin" / "docker"
    real.parent.mkdir()
    real.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    real.chmod(0o755)
    monkeypatch.setenv("PATH", f"{real.parent}:/usr/bin:/bin")
    restricted = facts(RESTRICTED_STATUS, lib_modules=False, cgroup_v2=False)
    wrapper = toolchain.write_docker_wrapper(tmp_path, restricted)
    assert wrapper.parent == toolchain.wrapper_dir(tmp_path)
    out = subprocess.run([str(wrapper), *KIND_RUN], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == toolchain.rewrite_docker_args(KIND_RUN, restricted,
                                                str(tmp_path / "hostfix" / "cgroup-rw.sh"))
    script = (tmp_path / "hostfix" / "cgroup-rw.sh").read_text()
    assert "remount,bind,rw" in script and script.rstrip().endswith('/sbin/init "$@"')


def test_kind_gets_the_wrapper_only_where_the_host_needs_it(tmp_path: Path) -> None:
    ordinary = toolchain.kind_env(tmp_path, facts())
    assert str(toolchain.wrapper_dir(tmp_path)) not in ordinary.get("PATH", "")
    assert not toolchain.wrapper_dir(tmp_path).exists()
    restricted = toolchain.kind_env(tmp_path, facts(RESTRICTED_STATUS))
    assert restricted["PATH"].startswith(str(toolchain.wrapper_dir(tmp_path)) + ":")


def test_smoke_without_a_built_node_image_says_how_to_build_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_MESH_LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(hostcheck, "detect", facts)
    with pytest.raises(LabError, match="tools install kubernetes"):
        toolchain.smoke(lambda line: None)


def test_the_proxy_image_is_laid_out_as_istios_proxyv2() -> None:
    from lab.backends.kube import labimages

    recipe = labimages.proxy_recipe("/x/pilot-agent", "/y/envoy", Path("/z/bootstrap.json"))
    own = {k: v for k, v in recipe.binaries.items() if "xtables" not in k}
    assert own == {"/usr/local/bin/pilot-agent": "/x/pilot-agent",
                   "/usr/local/bin/envoy": "/y/envoy"}
    # istio-init is this image too: `pilot-agent istio-iptables` runs the host's iptables
    assert "/usr/sbin/xtables-nft-multi" in recipe.binaries
    assert recipe.links["/usr/sbin/iptables-restore"] == "xtables-nft-multi"
    assert recipe.files[labimages.PROXY_BOOTSTRAP] == "/z/bootstrap.json"
    assert 'ENTRYPOINT ["/usr/local/bin/pilot-agent"]' in recipe.changes
    assert "USER 1337" in recipe.changes
    assert "+" not in recipe.tag and recipe.tag.startswith("redis-mesh-lab/istio-proxy:")
    istiod = labimages.istiod_recipe("/x/pilot-discovery")
    assert istiod.binaries == {"/usr/local/bin/pilot-discovery": "/x/pilot-discovery"}
