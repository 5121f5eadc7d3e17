"""Real istiod as the docker lab's control plane (`up --backend docker --control-plane istiod`).

pilot-discovery runs on the host, listening only on the lab network's gateway address, fed
files as on `local` (ServiceEntries and WorkloadEntries with the pods' IPs, the EnvoyFilters
as the Kubernetes path applies them). The sidecar is captured by iptables, so istiod is told
INTERCEPTION_MODE REDIRECT and gets no Sidecar resource: its own default listeners
(virtualOutbound on 15001, `<VIP>_6379` not bound to a port) are the ones the EnvoyFilters
patch. Envoy resolves the pods' DNS names through the engine's DNS (127.0.0.11), as a pod
resolves them through the cluster DNS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from lab import procs, versions
from lab.controlplane import istio_config, istiod, pilot, xds_bootstrap
from lab.envoy import sidecar as envoy_files
from lab.model import LabSpec
from lab.state import ControlPlaneFacts, Process

from . import sidecar

INTERCEPTION = "REDIRECT"
ENGINE_DNS = ("127.0.0.11", 53)  # Docker's embedded DNS, in every container of the network


def start(spec: LabSpec, directory: Path, *, gateway: str, vips: Mapping[str, str],
          pod_addresses: Mapping[str, str], record: Callable[[Process], object]) -> pilot.Ports:
    """Write istiod's inputs (the spec's EnvoyFilters include a mutant's) and start it,
    labelled with the lab's directory so `down` finds it even without a state file; returns
    its ports once istiod reports ready."""
    binary = pilot.require()
    files = istiod.write_config(directory, istio_config.documents(
        spec, vips, pod_addresses, interception=INTERCEPTION))
    ports = pilot.Ports(gateway)
    argv = pilot.argv(binary, files["config"], files["mesh"], files["networks"], ports)
    (directory / "istiod" / "command.txt").write_text(" ".join(argv) + "\n", encoding="utf-8")
    log = directory / "logs" / "istiod.log"
    process = procs.launch(istiod.NAME, istiod.wrapped(argv), log, directory / "istiod",
                           str(directory), expect="pilot-discovery", record=record)
    istiod.wait_ready(ports, process.pid, log)
    return ports


def write_bootstrap(spec: LabSpec, side_dir: Path, client_ip: str, ports: pilot.Ports) -> Path:
    """The sidecar's Envoy bootstrap: ADS to istiod on the gateway, the engine's DNS."""
    metadata = istio_config.node_metadata(spec, client_ip, istiod.ISTIO_VERSION_METADATA,
                                          interception=INTERCEPTION)
    boot = xds_bootstrap.build(istio_config.node_id(client_ip), metadata,
                               f"{sidecar.CONFIG_DIR}/{sidecar.ADMIN_SOCKET}",
                               (ports.host, ports.grpc), ENGINE_DNS)
    return envoy_files.write(boot, side_dir / sidecar.CONFIG_FILE)


def facts(ports: pilot.Ports, client_ip: str) -> ControlPlaneFacts:
    """What a docker lab's state records of its istiod."""
    return ControlPlaneFacts(
        name=istiod.NAME, description=istiod.describe(), istio_version=versions.ISTIOD_RELEASE,
        istio_build=versions.ISTIOD_DESCRIPTION, istiod_http=ports.address(ports.http),
        proxy_id=istio_config.node_id(client_ip))
