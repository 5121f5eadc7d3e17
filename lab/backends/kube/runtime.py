"""`--backend kind` and `--backend existing`: the tutorial on Kubernetes, carrying out the
stages of lab.pipeline with the steps of lab.backends.kube.steps."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lab import locks, model, paths, procs, versions
from lab.backends.base import UpOptions
from lab.envoy import proof
from lab.envoy.admin import server_version
from lab.errors import LabError
from lab.manifests import Document
from lab.model import LabSpec
from lab.pipeline import Pipeline, ProxyProof, StageKey
from lab.progress import Progress
from lab.state import (
    AdminEndpoint,
    ControlPlaneFacts,
    KubeFacts,
    LabState,
    MirrorEndpoint,
    ProxyEndpoint,
)
from lab.topology import Node, Topology
from lab.versions import IstioProfile

from . import diagnostics as diag
from . import envoyfilters as kube_filters
from . import hostcheck, readiness, redisinfo, toolchain, tools
from . import steps as plan_steps
from .access import KubeAccess
from .kubeapi import ClientApi, KubeApi, ref, require_kubernetes
from .layout import NAMESPACE, Layout, existing_layout, kind_layout, layout_of
from .plan import Executor, execute_plan, render_plan
from .runner import Runner, SubprocessRunner


def profile_of(name: str) -> IstioProfile:
    try:
        return versions.ISTIO_PROFILES[name]
    except KeyError:
        valid = ", ".join(versions.ISTIO_PROFILES)
        raise LabError(f"unknown Istio profile {name!r}; valid: {valid}") from None


class KubeRuntime:
    """Runs the plan of lab.backends.kube.steps, stage by stage; every seam (the runner of
    kind/kubectl/istioctl, the Kubernetes API, the pause between polls) can be replaced by a
    test."""

    timeouts: Mapping[StageKey, float] = {
        StageKey.NODES: 600.0, StageKey.CLUSTER: plan_steps.CLUSTER_CREATE_TIMEOUT,
        StageKey.CONVERGE: 120.0, StageKey.PROXY: 180.0}

    def __init__(self, existing: bool, runner: Runner | None = None,
                 api: KubeApi | None = None, sleep: Callable[[float], None] = time.sleep,
                 ) -> None:
        self.existing = existing
        self.name = "existing" if existing else "kind"
        # a kind lab is a whole cluster: two variants at a time; an existing cluster holds
        # one lab (its namespace redis): no variant at all
        self.variant_capacity: int | None = 0 if existing else 2
        self._runner = runner
        self._api = api
        self.sleep = sleep

    # -- seams ---------------------------------------------------------------------------

    def layout(self, options: UpOptions) -> Layout:
        paths.check_name(options.name)
        if self.existing:
            return existing_layout(options.name, options.kubeconfig, options.context)
        return kind_layout(options.name)

    def runner(self, layout: Layout) -> Runner:
        if self._runner is not None:
            return self._runner
        if layout.existing:
            return SubprocessRunner(layout.kubeconfig, cache_dir=layout.cache_dir)
        # kind's environment: on a host that refuses --privileged, the docker wrapper first;
        # the node on a docker network of the lab's own, which `down` removes (kind's shared
        # "kind" network would outlive the lab)
        env = toolchain.kind_env(toolchain.root(), hostcheck.detect())
        env[KIND_NETWORK_ENV] = network_of(layout)
        return SubprocessRunner(layout.kubeconfig, cache_dir=layout.cache_dir, env=env)

    def api(self, layout: Layout) -> KubeApi:
        return self._api or ClientApi(layout.kubeconfig, layout.context)

    # -- the plan ------------------------------------------------------------------------

    def header(self, options: UpOptions) -> list[str]:
        layout = self.layout(options)
        return plan_steps.header(layout, profile_of(options.istio), options).splitlines()

    def describe(self, key: StageKey, options: UpOptions) -> list[str]:
        if key is StageKey.RENDER:
            return [f"the k8s manifests and the EnvoyFilters, shown with {plan_steps.VIP.label}"]
        layout = self.layout(options)
        staged = plan_steps.staged(layout, profile_of(options.istio), options)
        number = 0
        for stage_key in StageKey:
            steps = [*staged.steps.get(stage_key, []), *staged.waits.get(stage_key, [])]
            if stage_key == key:
                return render_plan("", steps, start=number + 1).strip("\n").splitlines()
            number += len(steps)
        return []

    def preflight(self, options: UpOptions) -> None:
        self.layout(options)
        profile_of(options.istio)
        if self._api is None:  # before a cluster exists: its waits would only time out
            require_kubernetes()

    def build(self, options: UpOptions, journal: LabState, progress: Progress) -> KubeBuild:
        return KubeBuild(self, options, journal, progress)

    def running(self, state: LabState) -> bool:
        return True  # a cluster is not asked: `down` first, or `attach`

    def leftovers(self, name: str) -> bool:
        return False  # a kind lab without its directory cannot be told from any cluster

    def stop(self, name: str, state: LabState | None, progress: Progress) -> bool:
        """Delete the lab's kind cluster and its network (by the lab's name when the state is
        unreadable), or on an existing cluster what the lab applied (its namespace last)."""
        if state is None or state.kube is None:
            if self.existing or not paths.lab_dir(name).is_dir():
                return False
            layout = kind_layout(name)
            with progress.step(f"Delete kind cluster {layout.cluster}"):
                self._teardown(layout, self.runner(layout), self.api(layout), {}, [])
            return True
        layout = layout_of(state)
        for process in state.processes:
            procs.stop(process.pid, process.expect)
        title = (f"Delete kind cluster {layout.cluster}" if not layout.existing
                 else "Delete the lab's namespace and EnvoyFilters")
        with progress.step(title):
            self._teardown(layout, self.runner(layout), self.api(layout), {},
                           list(state.kube.applied))
        return True

    def _teardown(self, layout: Layout, runner: Runner, api: KubeApi, found: dict[str, str],
                  applied: list[Document]) -> bool:
        if not layout.existing:
            kind = found.get("kind") or _kind_for_down()
            if kind is None:
                raise LabError(f"kind not found: cannot delete cluster {layout.cluster}; "
                               f"run `kind delete cluster --name {layout.cluster}`")
            assert layout.cluster is not None
            runner.run([kind, "delete", "cluster", "--name", layout.cluster, "--kubeconfig",
                        str(layout.kubeconfig)], check=False, timeout=300)
            runner.run(["docker", "network", "rm", network_of(layout)], check=False, timeout=60)
            return True
        removed = False
        # Reverse order: EnvoyFilters first, the namespace (and everything in it) last.
        # The tutorial CRD stays: deleting a CRD deletes every EnvoyFilter in the cluster.
        for doc in reversed(applied):
            if doc["kind"] == "CustomResourceDefinition":
                continue
            if doc.get("metadata", {}).get("namespace") == "redis" and doc["kind"] != "Namespace":
                continue  # goes with the namespace
            with contextlib.suppress(LabError):
                removed = api.delete(doc) or removed
        return removed

    @staticmethod
    def _versions(layout: Layout, ex: Executor) -> tuple[str, str]:
        """Envoy's and Redis's versions as the lab runs them: the client sidecar's
        /server_info and redis-cluster-0's INFO server ("" where an answer cannot be read)."""
        envoy = redis = ""
        with contextlib.suppress(LabError, ValueError, AttributeError):
            envoy = server_version(readiness.admin_answer(ex.run(
                layout.admin_get(ex.context["client_pod"], "server_info"), timeout=60).stdout))
        with contextlib.suppress(LabError):
            info = ex.run(layout.exec_in(f"{model.STATEFULSET}-0", plan_steps.REDIS_CONTAINER,
                                         "redis-cli", "info", "server"), timeout=30).stdout
            redis = redisinfo.info_fields(info).get("redis_version", "")
        return envoy, redis

    def _record(self, journal: LabState, layout: Layout, profile: IstioProfile,
                options: UpOptions, context: dict[str, Any]) -> None:
        spec = model.load_spec(context["redis_vip"], options.read_policy, options.mirror)
        service = spec.service(model.CLIENT_SERVICE)
        client_pod = context["client_pod"]
        mirror = context.get("mirror") or {}
        journal.proxy = ProxyEndpoint(
            host=service.fqdn, port=model.REDIS_PORT, vip=context["redis_vip"],
            via=f"kubectl exec -i {client_pod} -c redis-client (its sidecar)")
        journal.admin = AdminEndpoint(
            via=f"kubectl exec {client_pod} -c istio-proxy -- pilot-agent request GET <path>",
            pod=client_pod)
        journal.mirror = MirrorEndpoint(host=mirror.get("host", ""), port=model.REDIS_PORT,
                                        pod=mirror.get("pod", ""))
        journal.shards = context["shards"]
        journal.istio_profile = profile.name
        journal.spares = [Node(name, ip, model.REDIS_PORT).to_dict()
                          for name, ip in context.get("spare_pods", [])]
        journal.control_plane = ControlPlaneFacts(name="istiod",
                                                  istio_version=profile.istioctl.version)
        journal.kube = KubeFacts(
            kubeconfig=str(layout.kubeconfig), context=layout.context,
            cluster=layout.cluster, namespace=NAMESPACE, client_pod=client_pod,
            redis_pods=sorted(context.get("redis_pods", {}).values()),
            kind_version=None if layout.existing else profile.kind.version,
            node_image=None if layout.existing else profile.node_image,
            applied=_applied_after([], [], context.get("applied", [])),
            sync_generation=1 if options.envoyfilters else 0)
        journal.envoyfilters = [str(Path(f).resolve()) for f in options.envoyfilters]

    # -- access, reconfigure, diagnostics -------------------------------------------------

    def reconfigure(self, name: str, envoyfilters: Sequence[Path | str],
                    progress: Progress) -> LabState:
        """Swap a running lab's extra EnvoyFilters through the Kubernetes API; istiod delivers
        them, and the sync marker (lab.backends.kube.envoyfilters) says when it has."""
        with locks.lab_lock(paths.check_name(name), "being reconfigured"):
            state = LabState.load(name)
            if state is None or state.backend != self.name:
                raise LabError(f"lab {name!r} is not up on backend {self.name}")
            layout = layout_of(state)
            files = [str(Path(f).resolve()) for f in envoyfilters]
            vip = state.proxy.vip
            facts = state.kube_facts()
            spec = model.load_spec(vip, state.read_policy, state.mirror_enabled,
                                   extra_envoyfilters=files)
            applied = list(facts.applied)
            generation = facts.sync_generation + 1
            ex = Executor(runner=self.runner(layout), api=self.api(layout),
                          progress=progress, sleep=self.sleep)
            ex.context.update({plan_steps.VIP.key: vip,
                               plan_steps.CLIENT_POD.key: facts.client_pod})
            try:
                execute_plan(ex, plan_steps.reconfigure(layout, spec, applied, generation))
            finally:
                # recorded even when a step fails: down deletes what was applied, and the
                # next marker must be a new one (this one may be in the sidecar already)
                facts.applied = _applied_after(
                    applied, kube_filters.stale(applied, spec.all_envoyfilter_documents),
                    ex.context.get("applied", []))
                facts.sync_generation = generation
                state.save()
            state.envoyfilters = files
            state.save()
            return state

    def access(self, state: LabState) -> KubeAccess:
        return KubeAccess(state, runner=self._runner)

    def diagnostics(self, state: LabState, dest: Path) -> Path:
        layout = layout_of(state)
        found = {"kubectl": tools.kubectl()}
        if layout.cluster:
            kind = _kind_for_down()
            if kind:
                found["kind"] = kind
        return diag.collect(layout, self.runner(layout), found, dest, api=self.api(layout),
                            client_pod=state.kube.client_pod if state.kube else None)


class KubeBuild:
    """One `up` of a kind or existing lab (lab.pipeline.runtime.Build): each stage runs its
    steps of lab.backends.kube.steps; the pipeline polls the probes of their Waits."""

    poll_interval = 2.0

    def __init__(self, runtime: KubeRuntime, options: UpOptions, journal: LabState,
                 progress: Progress) -> None:
        self.runtime = runtime
        self.options = options
        self.journal = journal
        self.progress = progress
        self.layout = runtime.layout(options)
        self.profile = profile_of(options.istio)
        self.staged = plan_steps.staged(self.layout, self.profile, options)
        self.ex = Executor(runner=runtime.runner(self.layout), api=runtime.api(self.layout),
                           progress=progress, sleep=runtime.sleep)
        # an interrupted or kept `up` is found, and taken down, by `down --name`
        journal.kube = KubeFacts(kubeconfig=str(self.layout.kubeconfig),
                                 context=self.layout.context, cluster=self.layout.cluster)
        journal.save()
        progress.say(f"lab {options.name}: {runtime.name} backend, Istio profile "
                     f"{self.profile.name}")

    def sleep(self, seconds: float) -> None:
        self.runtime.sleep(seconds)

    def _run(self, key: StageKey) -> None:
        execute_plan(self.ex, self.staged.steps.get(key, []))

    def _probe(self, key: StageKey) -> str | None:
        """The first of the stage's Waits whose condition does not hold yet, and why."""
        for wait in self.staged.waits.get(key, []):
            try:
                reason = wait.probe(self.ex)
            except LabError as exc:
                reason = str(exc)
            if reason is not None:
                return f"{wait.condition}: {reason}"
        return None

    def render(self) -> LabSpec:
        with self.progress.step("render manifests into the lab model"):
            spec = plan_steps.preview_spec(self.options)
            proof.check_envoyfilters(spec.envoyfilters + spec.extra_envoyfilters)
        return spec

    def prepare(self) -> None:
        self.layout.directory.mkdir(parents=True, exist_ok=True)
        self._run(StageKey.INFRASTRUCTURE)

    def start_control_plane(self) -> None:
        self._run(StageKey.CONTROL_PLANE)

    def start_nodes(self) -> None:
        self._run(StageKey.NODES)

    def nodes_not_ready(self) -> str | None:
        return self._probe(StageKey.NODES)

    def create_cluster(self) -> None:
        self._run(StageKey.CLUSTER)

    def cluster_not_converged(self) -> str | None:
        return self._probe(StageKey.CONVERGE)

    def start_proxy(self) -> None:
        self._run(StageKey.PROXY)

    def proxy_not_ready(self) -> str | None:
        return self._probe(StageKey.PROXY)

    def check_control_plane(self) -> None:
        pass  # the proxy wait is istiod's delivery: the sidecar holds the EnvoyFilters

    def topology(self) -> Topology:
        return Topology.from_list(self.ex.context["shards"])

    def proof(self) -> ProxyProof | None:
        return None  # the proxy wait read the sidecar's config_dump and its hosts

    def finish(self) -> None:
        self._run(StageKey.PROVE)
        self.runtime._record(self.journal, self.layout, self.profile, self.options,
                             self.ex.context)
        self.journal.envoy_version, self.journal.redis_version = \
            self.runtime._versions(self.layout, self.ex)

    def diagnostics(self, dest: Path) -> Path | None:
        if "tools" not in self.ex.context:  # nothing was created yet: nothing to diagnose
            return None
        self.progress.say(f"  collecting diagnostics into {dest}")
        with contextlib.suppress(Exception):
            diag.collect(self.layout, self.ex.runner, self.ex.tools, dest, api=self.ex.api,
                         client_pod=self.ex.context.get("client_pod"))
        return dest

    def undo(self) -> bool:
        if "tools" not in self.ex.context:
            return True
        self.progress.say("  removing what this up created")
        try:
            self.runtime._teardown(self.layout, self.ex.runner, self.ex.api, self.ex.tools,
                                   self.ex.context.get("applied", []))
        except LabError as exc:
            self.progress.say(f"  cleanup incomplete: {exc}")
            return False  # keep the kubeconfig: the user needs it to clean up
        return True

    def close(self) -> None:
        pass


class KubeBackend(Pipeline):
    """The pipeline on the kind (or existing cluster) runtime."""

    runtime: KubeRuntime

    def __init__(self, existing: bool, runner: Runner | None = None,
                 api: KubeApi | None = None, sleep: Callable[[float], None] = time.sleep,
                 ) -> None:
        super().__init__(KubeRuntime(existing, runner=runner, api=api, sleep=sleep))


def _summary(doc: Document) -> Document:
    """What the state keeps of an applied object: enough to delete it."""
    return {"apiVersion": doc["apiVersion"], "kind": doc["kind"],
            "metadata": {k: v for k, v in doc["metadata"].items()
                         if k in ("name", "namespace")}}


def _applied_after(before: Sequence[Document], deleted: Sequence[Document],
                   applied: Sequence[Document]) -> list[Document]:
    """The state's list of applied objects, after deleting `deleted` and applying `applied`."""
    def key(doc: Document) -> tuple[str, str, str]:
        return (str(doc["kind"]), *kube_filters.identity(doc))

    gone = {key(d) for d in deleted}
    result = [d for d in before if key(d) not in gone]
    known = {key(d) for d in result}
    for doc in applied:
        if key(doc) not in known:
            result.append(_summary(doc))
            known.add(key(doc))
    return result


KIND_NETWORK_ENV = "KIND_EXPERIMENTAL_DOCKER_NETWORK"


def network_of(layout: Layout) -> str:
    """The docker network of a kind lab's node: its cluster's name."""
    assert layout.cluster is not None
    return layout.cluster


def _kind_for_down() -> str | None:
    """Any kind will do to delete a cluster or export its logs: the one built here, the
    pinned ones, then PATH."""
    built = toolchain.kind_path()
    if built.is_file():
        return str(built)
    for profile in versions.ISTIO_PROFILES.values():
        with contextlib.suppress(LabError):
            return tools.resolve(profile.kind, allow_download=False)
    return shutil.which("kind")


__all__ = ["KubeBackend", "KubeRuntime", "profile_of", "ref"]
