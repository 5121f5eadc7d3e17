"""Real istiod as the local lab's control plane: inputs on disk, DNS, pilot-discovery, Envoy.

`start` writes istiod's file configuration (lab/controlplane/istio_config.py), starts the
lab's DNS responder and pilot-discovery on the lab's loopback block, waits until istiod is
ready, and returns the Envoy bootstrap (ADS to istiod). `check_config` then tells from
Envoy's config_dump whether istiod's push holds what the EnvoyFilters should have made,
naming the EnvoyFilter that matched nothing (istiod ignores such a patch silently).
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from lab import procs, versions
from lab.controlplane import istio_config, pilot, xds_bootstrap
from lab.controlplane.addresses import Block
from lab.controlplane.addresses import allocate as allocate_block
from lab.errors import LabError
from lab.manifests import Document
from lab.model import LabSpec
from lab.state import ControlPlaneFacts, LabState, Process

NAME = "istiod"
DNS_PORT_FILE = "dns.port"
ISTIO_VERSION_METADATA = "1.31.0"  # what the node says it runs; istiod gates features on it


class _NotYet(Exception):
    pass


def describe() -> str:
    return f"istiod {versions.ISTIOD_RELEASE} ({versions.ISTIOD_DESCRIPTION})"


def addresses(spec: LabSpec, block: Block) -> dict[str, str]:
    """Pod name -> its address in the lab's block."""
    found: dict[str, str] = {}
    for pod in istio_config.pods(spec):
        if pod.name == istio_config.CLIENT:
            found[pod.name] = block.client
        elif pod.name.startswith(spec.statefulset.name + "-"):
            found[pod.name] = block.node(int(pod.name.rsplit("-", 1)[1]))
        else:
            found[pod.name] = block.mirror
    return found


def vips(spec: LabSpec, block: Block) -> dict[str, str]:
    routed = [s for s in spec.services if not s.headless]
    return {s.name: block.vip(i) for i, s in enumerate(routed)}


def zone(spec: LabSpec, service_vips: Mapping[str, str],
         pod_addresses: Mapping[str, str]) -> dict[str, list[str]]:
    """The cluster DNS of the lab: Service names, pod names under the headless Service."""
    records: dict[str, list[str]] = {}
    sts = spec.statefulset
    for service in spec.services:
        selected = [addr for pod in istio_config.pods(spec)
                    if pod.name in pod_addresses
                    and all(pod.labels.get(k) == v for k, v in service.selector.items())
                    for addr in [pod_addresses[pod.name]]]
        records[service.fqdn] = selected if service.headless else [service_vips[service.name]]
    for ordinal in range(sts.replicas):
        records[sts.pod_fqdn(ordinal)] = [pod_addresses[sts.pod(ordinal)]]
    return records


def write_inputs(directory: Path, spec: LabSpec, block: Block,
                 extra_envoyfilters: Sequence[Document] = ()) -> dict[str, Path]:
    """istiod's config directory, mesh config and meshNetworks; the DNS zone."""
    service_vips, pod_addresses = vips(spec, block), addresses(spec, block)
    files = write_config(directory, istio_config.documents(spec, service_vips, pod_addresses,
                                                           extra_envoyfilters))
    files["zone"] = directory / "istiod" / "zone.json"
    files["zone"].write_text(json.dumps(zone(spec, service_vips, pod_addresses), indent=1),
                             encoding="utf-8")
    return files


def write_config(directory: Path, docs: Sequence[Document]) -> dict[str, Path]:
    """`<directory>/istiod/`: config/lab.yaml (the documents), mesh.yaml, meshNetworks.yaml."""
    root = directory / "istiod"
    config_dir = root / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "lab.yaml").write_text(istio_config.to_yaml(docs), encoding="utf-8")
    files = {"config": config_dir, "mesh": root / "mesh.yaml",
             "networks": root / "meshNetworks.yaml"}
    files["mesh"].write_text(yaml.safe_dump(istio_config.mesh_config()), encoding="utf-8")
    files["networks"].write_text("networks: {}\n", encoding="utf-8")
    return files


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", errors="replace")


Launch = Callable[[str, list[str], Path, Path, str], Process]  # name, argv, log, cwd, expect


def start(spec: LabSpec, block: Block, directory: Path, *, launch: Launch,
          admin: str | tuple[str, int], extra_envoyfilters: Sequence[Document] = (),
          ) -> dict[str, Any]:
    """Start the lab's DNS and istiod through `launch`; return Envoy's bootstrap.

    `admin` is Envoy's admin address: a Unix socket path or a loopback (host, port).
    """
    binary = pilot.require()
    files = write_inputs(directory, spec, block, extra_envoyfilters)
    logs = directory / "logs"
    port_file = directory / "istiod" / DNS_PORT_FILE
    dns_argv = [sys.executable, "-m", "lab.controlplane.dns", str(files["zone"]), block.dns,
                str(port_file)]
    dns = launch("dns", dns_argv, logs / "dns.log", directory, "lab.controlplane.dns")
    ports = pilot.Ports(block.istiod)
    argv = pilot.argv(binary, files["config"], files["mesh"], files["networks"], ports)
    (directory / "istiod" / "command.txt").write_text(" ".join(argv) + "\n", encoding="utf-8")
    process = launch(NAME, wrapped(argv), logs / "istiod.log", directory / "istiod",
                     "pilot-discovery")
    dns_port = _wait_dns(port_file, dns.pid, logs)
    wait_ready(ports, process.pid, logs / "istiod.log")
    metadata = istio_config.node_metadata(spec, block.client, ISTIO_VERSION_METADATA)
    return xds_bootstrap.build(istio_config.node_id(block.client), metadata, admin,
                               (ports.host, ports.grpc), (block.dns, dns_port))


def wrapped(argv: list[str]) -> list[str]:
    """`env VAR=... pilot-discovery ...`: istiod's environment through any spawn helper."""
    return ["env", *(f"{k}={v}" for k, v in pilot.ENVIRONMENT.items()), *argv]


def _tail(log: Path, lines: int = 3) -> str:
    if not log.is_file():
        return ""
    text = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(text[-lines:])


def _wait_dns(port_file: Path, pid: int, logs: Path) -> int:
    @retry(stop=stop_after_delay(15), wait=wait_fixed(0.05),
           retry=retry_if_exception_type(_NotYet), reraise=True)
    def bound() -> int:
        if not procs.running(pid):
            raise LabError(f"the lab's DNS responder exited: {_tail(logs / 'dns.log')}")
        if not port_file.is_file():
            raise _NotYet("no port yet")
        return int(port_file.read_text(encoding="ascii"))

    try:
        return bound()
    except _NotYet:
        raise LabError("the lab's DNS responder did not start within 15 s") from None


READY_LINE = "marking server ready"  # ads: caches synced, push context built


def wait_ready(ports: pilot.Ports, pid: int, log: Path, offset: int = 0) -> None:
    """Until istiod's xDS server is ready: its log says so and its gRPC port accepts.

    Not `/ready`: without Kubernetes its "config validation" and "sidecar injector" probes
    are never set (istiod starts neither), so it answers 503 for ever.
    """
    @retry(stop=stop_after_delay(60), wait=wait_fixed(0.2),
           retry=retry_if_exception_type((_NotYet, OSError)), reraise=True)
    def ready() -> None:
        if not procs.running(pid):
            raise LabError(f"istiod exited: {_tail(log)}")
        with open(log, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
        if READY_LINE not in text:
            raise _NotYet(f"its log does not say {READY_LINE!r} yet")
        socket.create_connection((ports.host, ports.grpc), timeout=2).close()

    try:
        ready()
    except (_NotYet, OSError) as exc:
        raise LabError(f"istiod did not become ready within 60 s: {exc}") from None


def diagnostics(facts: ControlPlaneFacts, logs: Path) -> dict[str, str]:
    """For a lab's diagnostics bundle: istiod's view of the proxy, what it and Envoy
    rejected, and the EnvoyFilters whose effect is missing from Envoy's config."""
    host, _, port = facts.istiod_http.rpartition(":")
    found = debug(host, int(port or 0), facts.proxy_id) if host else {}
    pattern = ("rejected", "nack", "error", "warn")
    rejected = [f"{log.name}: {line.strip()}" for log in (logs / "istiod.log", logs / "envoy.log")
                if log.is_file()
                for line in log.read_text(errors="replace").splitlines()
                if any(word in line.lower() for word in pattern)]
    found["istiod-rejections"] = "\n".join(rejected[-200:]) or "(none)"
    found["istiod-unmatched-envoyfilters"] = "\n".join(
        facts.unmatched_envoyfilters) or "(none)"
    return found


def debug(host: str, http_port: int, proxy_id: str) -> dict[str, str]:
    """istiod's view, for the diagnostics bundle: its config_dump for the proxy, sync state."""
    base = f"http://{host}:{http_port}/debug"
    found: dict[str, str] = {}
    for name, path in (("istiod-config_dump", f"config_dump?proxyID={proxy_id}"),
                       ("istiod-syncz", "syncz"), ("istiod-configz", "configz")):
        try:
            found[name] = http_get(f"{base}/{path}", timeout=10)[1]
        except OSError as exc:
            found[name] = f"unreachable: {exc}"
    return found


def plan_lines() -> list[str]:
    """`up --dry-run`'s control-plane and proxy stages of a local lab in istiod mode."""
    return [
        "a loopback block 127.77.N.0/24 of the lab's own: nodes at .10-.15:6379, mirror "
        ".30:6379, the redis-cluster VIP .1:6379; write istiod's inputs (ServiceEntries, "
        "WorkloadEntries, the client's Sidecar, mesh config, the EnvoyFilters) to "
        "istiod/config/lab.yaml; start the lab's DNS on .53 and pilot-discovery "
        f"({describe()}) with every port on .50",
        "Envoy with an ADS bootstrap to istiod (node sidecar~<.40>~redis-client.redis~"
        "redis.svc.cluster.local), envoy --mode validate, start it",
    ]


def reconfigure(state: LabState, spec: LabSpec) -> Path:
    """A mutant lab's extra EnvoyFilters for an istiod lab: rewrite istiod's inputs (the new
    extra EnvoyFilters are in `spec`), restart istiod (the journal's process), wait until it
    is ready; Envoy's ADS bootstrap stays as it is (the caller restarts Envoy). Returns the
    bootstrap's path."""
    if state.control_plane.loopback_block is None:
        raise LabError(f"lab {state.name}: its state records no loopback block for istiod")
    block = Block(state.control_plane.loopback_block)
    write_inputs(state.directory, spec, block)
    old = next(p for p in state.processes if p.name == NAME)
    procs.terminate(old)
    log = Path(old.log)
    offset = log.stat().st_size if log.exists() else 0
    new = procs.relaunch(old, str(state.directory))
    state.processes = [new if p is old else p for p in state.processes]
    state.save()
    wait_ready(pilot.Ports(block.istiod), new.pid, log, offset)
    return Path(state.directory) / "envoy.json"


def require_block(name: str, states: Sequence[LabState]) -> Block:
    """The istiod binary first (`up` never builds it), then the lab's loopback block."""
    pilot.require()
    taken = [s.control_plane.loopback_block for s in states
             if s.name != name and s.control_plane.loopback_block is not None]
    return allocate_block(name, taken)


def facts(block: Block) -> ControlPlaneFacts:
    """What a local lab's state records of its istiod."""
    return ControlPlaneFacts(
        name=NAME, description=describe(), istio_version=versions.ISTIOD_RELEASE,
        istio_build=versions.ISTIOD_DESCRIPTION, loopback_block=block.third,
        istiod_http=f"{block.istiod}:{pilot.Ports(block.istiod).http}",
        proxy_id=istio_config.node_id(block.client))


# ---- did istiod's push do what the EnvoyFilters ask? ----------------------------------------

def _dynamic(config_dump: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Active listeners or clusters of an Envoy /config_dump."""
    found: list[dict[str, Any]] = []
    for section in config_dump.get("configs", []):
        if kind == "listeners":
            for item in section.get("dynamic_listeners", []):
                state = item.get("active_state") or item.get("warming_state") or {}
                if "listener" in state:
                    found.append(state["listener"])
        else:
            found += [c["cluster"] for c in section.get("dynamic_active_clusters", [])
                      if "cluster" in c]
            found += [c["cluster"] for c in section.get("dynamic_warming_clusters", [])
                      if "cluster" in c]
    return found


def _filters(listener: dict[str, Any]) -> list[str]:
    return [f.get("name", "") for chain in listener.get("filter_chains", [])
            for f in chain.get("filters", [])]


def unmatched(config_dump: dict[str, Any], envoyfilters: Sequence[Document]) -> list[str]:
    """One line per EnvoyFilter patch whose effect is missing from Envoy's config.

    Checked: CLUSTER ADD/INSERT_FIRST (a cluster of that name), CLUSTER MERGE/REPLACE/
    REMOVE of a cluster an EnvoyFilter added (istiod never patches those), NETWORK_FILTER
    REPLACE/ADD/INSERT_* (a filter of that name on the matched listener); other operations
    leave no name to look for and are not judged here.
    """
    listeners = {lst.get("name"): lst for lst in _dynamic(config_dump, "listeners")}
    clusters = {c.get("name") for c in _dynamic(config_dump, "clusters")}
    added = {(p.get("patch", {}).get("value") or {}).get("name")
             for doc in envoyfilters for p in doc.get("spec", {}).get("configPatches", [])
             if p.get("applyTo") == "CLUSTER"
             and p.get("patch", {}).get("operation") in ("ADD", "INSERT_FIRST")}
    problems: list[str] = []
    for doc in envoyfilters:
        meta = doc.get("metadata", {})
        label = f"EnvoyFilter {meta.get('namespace', 'default')}/{meta.get('name', '?')}"
        for index, patch in enumerate(doc.get("spec", {}).get("configPatches", [])):
            operation = patch.get("patch", {}).get("operation")
            value = patch.get("patch", {}).get("value") or {}
            name = value.get("name") if isinstance(value, dict) else None
            where = f"{label} configPatches[{index}] ({patch.get('applyTo')} {operation})"
            if patch.get("applyTo") == "CLUSTER" and operation in ("ADD", "INSERT_FIRST"):
                if name and name not in clusters:
                    problems.append(f"{where} matched nothing: Envoy has no cluster {name}")
            elif patch.get("applyTo") == "CLUSTER" and operation in ("MERGE", "REPLACE",
                                                                      "REMOVE"):
                target = ((patch.get("match") or {}).get("cluster") or {}).get("name")
                if target in added:
                    problems.append(f"{where} matched nothing: cluster {target} was added by an "
                                    "EnvoyFilter, and istiod patches only the clusters it "
                                    "generates")
            elif patch.get("applyTo") == "NETWORK_FILTER" and name and operation in (
                    "REPLACE", "ADD", "INSERT_FIRST", "INSERT_BEFORE", "INSERT_AFTER"):
                wanted = (patch.get("match") or {}).get("listener", {}).get("name")
                if wanted and wanted not in listeners:
                    problems.append(f"{where} matched nothing: Envoy has no listener {wanted} "
                                    f"(listeners: {', '.join(sorted(map(str, listeners)))})")
                elif wanted and name not in _filters(listeners[wanted]):
                    problems.append(f"{where} matched nothing: listener {wanted} has no {name} "
                                    f"(filters: {', '.join(_filters(listeners[wanted]))})")
    return problems


def check_config(admin: Any, spec: LabSpec, *, mutant: bool = False) -> list[str]:
    """Name every EnvoyFilter whose effect istiod did not push. A lab as the manifests
    define it must have them all (LabError); a mutant lab's are returned for the record."""
    dump = json.loads(admin.get("/config_dump"))
    lines = unmatched(dump, istio_config.envoyfilters(spec))
    if lines and not mutant:
        raise LabError(f"istiod ignored an EnvoyFilter (Istio does that silently): {lines[0]}"
                       + (f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""))
    return lines
