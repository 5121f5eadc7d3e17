"""`--backend kind` and `--backend existing`: the tutorial on Kubernetes."""

from __future__ import annotations

import contextlib
import datetime
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lab import locks, model, paths, procs, versions
from lab.backends.base import UpOptions
from lab.envoy.admin import server_version
from lab.errors import LabError
from lab.manifests import Document
from lab.progress import Progress
from lab.state import (
    AdminEndpoint,
    ControlPlaneFacts,
    CorruptState,
    KubeFacts,
    LabState,
    MirrorEndpoint,
    ProxyEndpoint,
)
from lab.topology import Node
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


def reports_dir() -> Path:
    return Path.cwd() / "reports"


class KubeBackend:
    """Runs the plan of lab.backends.kube.steps; every seam can be replaced by a test."""

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
        self._sleep = sleep

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

    def dry_run(self, options: UpOptions) -> str:
        layout = self.layout(options)
        profile = profile_of(options.istio)
        steps = plan_steps.build(layout, profile, options)
        return render_plan(plan_steps.header(layout, profile, options), steps)

    def up(self, options: UpOptions, progress: Progress) -> LabState:
        layout = self.layout(options)
        profile = profile_of(options.istio)
        if self._api is None:  # before a cluster exists: its waits would only time out
            require_kubernetes()
        if LabState.load(options.name) is not None:
            raise LabError(f"lab {options.name} is already up; `down` it first or `attach`")
        steps = plan_steps.build(layout, profile, options)
        ex = Executor(runner=self.runner(layout), api=self.api(layout), progress=progress,
                      sleep=self._sleep)
        layout.directory.mkdir(parents=True, exist_ok=True)
        # the journal: an interrupted or kept up is found, and taken down, by `down --name`
        journal = LabState.starting(options.name, self.name, options.read_policy,
                                    options.mirror)
        journal.kube = KubeFacts(kubeconfig=str(layout.kubeconfig), context=layout.context,
                                 cluster=layout.cluster)
        journal.save()
        keep = options.keep
        progress.say(f"lab {options.name}: {self.name} backend, Istio profile {profile.name}")
        try:
            execute_plan(ex, steps)
            state = self._state(layout, profile, options, ex.context)
            state.envoy_version, state.redis_version = self._versions(layout, ex)
            state.save()
            return state
        except (LabError, KeyboardInterrupt) as exc:
            what = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            if "tools" not in ex.context:  # nothing was created yet: nothing to diagnose
                shutil.rmtree(layout.directory, ignore_errors=True)
                raise LabError(f"up failed: {what}") from None
            self._fail(layout, ex, keep, progress)
            bundle = reports_dir() / "diagnostics" / options.name
            kept = "; the cluster was kept for debugging" if keep else ""
            raise LabError(f"up failed: {what} (diagnostics in {bundle}{kept})") from None

    def _fail(self, layout: Layout, ex: Executor, keep: bool, progress: Progress) -> None:
        dest = reports_dir() / "diagnostics" / layout.lab
        progress.say(f"  collecting diagnostics into {dest}")
        with contextlib.suppress(Exception):
            diag.collect(layout, ex.runner, ex.tools, dest, api=ex.api,
                         client_pod=ex.context.get("client_pod"))
        if keep:
            return
        progress.say("  removing what this up created")
        try:
            self._teardown(layout, ex.runner, ex.api, ex.tools, ex.context.get("applied", []))
        except LabError as exc:
            progress.say(f"  cleanup incomplete: {exc}")
            return  # keep the kubeconfig: the user needs it to clean up
        shutil.rmtree(layout.directory, ignore_errors=True)

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

    def _state(self, layout: Layout, profile: IstioProfile, options: UpOptions,
               context: dict[str, Any]) -> LabState:
        spec = model.load_spec(context["redis_vip"], options.read_policy, options.mirror)
        service = spec.service(model.CLIENT_SERVICE)
        client_pod = context["client_pod"]
        mirror = context.get("mirror") or {}
        applied = _applied_after([], [], context.get("applied", []))
        return LabState(
            name=layout.lab,
            backend=self.name,
            read_policy=options.read_policy,
            mirror_enabled=options.mirror,
            proxy=ProxyEndpoint(
                host=service.fqdn, port=model.REDIS_PORT, vip=context["redis_vip"],
                via=f"kubectl exec -i {client_pod} -c redis-client (its sidecar)"),
            admin=AdminEndpoint(
                via=f"kubectl exec {client_pod} -c istio-proxy -- pilot-agent request GET <path>",
                pod=client_pod),
            mirror=MirrorEndpoint(host=mirror.get("host", ""), port=model.REDIS_PORT,
                                  pod=mirror.get("pod", "")),
            shards=context["shards"],
            processes=[],
            istio_profile=profile.name,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            spares=[Node(name, ip, model.REDIS_PORT).to_dict()
                    for name, ip in context.get("spare_pods", [])],
            control_plane=ControlPlaneFacts(name="istiod",
                                            istio_version=profile.istioctl.version),
            kube=KubeFacts(
                kubeconfig=str(layout.kubeconfig), context=layout.context,
                cluster=layout.cluster, namespace=NAMESPACE, client_pod=client_pod,
                redis_pods=sorted(context.get("redis_pods", {}).values()),
                kind_version=None if layout.existing else profile.kind.version,
                node_image=None if layout.existing else profile.node_image,
                applied=applied, sync_generation=1 if options.envoyfilters else 0),
            envoyfilters=[str(Path(f).resolve()) for f in options.envoyfilters],
        )

    # -- down, access, diagnostics -------------------------------------------------------

    def down(self, name: str, progress: Progress) -> bool:
        try:
            state = LabState.load(name)
        except CorruptState:  # unreadable: the kind cluster is found by the lab's name
            state = None
        directory = paths.lab_dir(name)
        if state is None:
            if not self.existing and directory.is_dir():
                layout = kind_layout(name)
                with progress.step(f"Delete kind cluster {layout.cluster}"):
                    self._teardown(layout, self.runner(layout), self.api(layout), {}, [])
                shutil.rmtree(directory, ignore_errors=True)
                return True
            return False
        layout = layout_of(state)
        for process in state.processes:
            procs.stop(process.pid, process.expect)
        title = (f"Delete kind cluster {layout.cluster}" if not layout.existing
                 else "Delete the lab's namespace and EnvoyFilters")
        with progress.step(title):
            self._teardown(layout, self.runner(layout), self.api(layout), {},
                           list(state.kube.applied if state.kube else []))
        shutil.rmtree(directory, ignore_errors=True)
        return True

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
                          progress=progress, sleep=self._sleep)
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


__all__ = ["KubeBackend", "profile_of", "ref"]
