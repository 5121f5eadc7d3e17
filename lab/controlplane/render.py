"""Render EnvoyFilters through a control plane into a real Envoy, without Redis: config only.

Used by the differential test and the edge-case table: for one lab model and a set of extra
EnvoyFilters, `builtin()` starts Envoy on the builtin patcher's static config, `istiod()`
starts istiod on the lab's file inputs and an Envoy that takes everything over ADS; each
returns Envoy's /config_dump (or why there is none) and the rejections Envoy and istiod
logged. Everything listens on a loopback block of its own and is stopped before returning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from lab import binaries, ports, procs
from lab.controlplane import builtin, istio_config, istiod, pilot, xds_bootstrap
from lab.controlplane.addresses import Block
from lab.envoy import sidecar
from lab.envoy.admin import Admin
from lab.errors import LabError
from lab.manifests import Document
from lab.model import REDIS_PORT, LabSpec, Service


@dataclass
class Rendered:
    config_dump: dict[str, Any] | None = None
    error: str | None = None  # the control plane refused (builtin: PatchError; Envoy: NACK)
    rejected: list[str] = field(default_factory=list)  # Envoy's and istiod's rejection lines


class _Pending(Exception):
    pass


_REJECTED = re.compile(r"rejected|NACK|nack|invalid|Error adding/updating|failed to",
                       re.IGNORECASE)


def _lines(log: Path, pattern: re.Pattern[str] = _REJECTED) -> list[str]:
    if not log.is_file():
        return []
    return [ln.strip()[:400] for ln in log.read_text(errors="replace").splitlines()
            if pattern.search(ln)]


class Renderer:
    def __init__(self, directory: Path, block: Block) -> None:
        self.directory = directory
        self.block = block
        self.count = 0

    def _run_envoy(self, boot: dict[str, Any], name: str, dynamic: bool) -> Rendered:
        work = self.directory / name
        work.mkdir(parents=True, exist_ok=True)
        admin_port = ports.pick(1)[0]
        boot["admin"] = {"address": {"socket_address": {"address": ports.LOOPBACK,
                                                        "port_value": admin_port}}}
        path = sidecar.write(boot, work / "envoy.json")
        log = work / "envoy.log"
        pid = procs.spawn([binaries.envoy(), "-c", str(path), "--disable-hot-restart",
                           "-l", "warning", "--base-id", str(10000 + admin_port)], log, work)
        admin = Admin(ports.LOOPBACK, admin_port)
        try:
            stats = self._wait_updates(admin, pid, log, dynamic)
            dump = json.loads(admin.get("/config_dump"))
        finally:
            procs.stop(pid)
        rejected = _lines(log)
        error = None
        if stats.get("listener_manager.lds.update_rejected", 0) or stats.get(
                "cluster_manager.cds.update_rejected", 0):
            error = "Envoy rejected istiod's push: " + (rejected[0] if rejected else "")
        return Rendered(dump, error, rejected)

    @staticmethod
    def _wait_updates(admin: Admin, pid: int, log: Path, dynamic: bool) -> dict[str, int]:
        """Until Envoy answers and (over ADS) has taken or refused one CDS and one LDS push."""
        @retry(stop=stop_after_delay(60), wait=wait_fixed(0.1),
               retry=retry_if_exception_type((_Pending, OSError)), reraise=True)
        def settled() -> dict[str, int]:
            if not procs.running(pid):
                raise LabError("envoy exited: " + " | ".join(_lines(log, re.compile(".")))[-400:])
            stats = {}
            for line in admin.get("/stats?filter=(lds|cds)\\.update_").splitlines():
                key, _, value = line.partition(": ")
                if value.strip().isdigit():
                    stats[key] = int(value)
            if dynamic and not all(
                    stats.get(f"{p}.update_success", 0) + stats.get(f"{p}.update_rejected", 0)
                    for p in ("listener_manager.lds", "cluster_manager.cds")):
                raise _Pending("no CDS/LDS push taken yet")
            return stats

        return settled()

    # ---- builtin ------------------------------------------------------------------------------
    def builtin(self, spec: LabSpec, extra: Sequence[Document] = ()) -> Rendered:
        self.count += 1
        vips = istiod.vips(spec, self.block)
        addresses = istiod.addresses(spec, self.block)

        def endpoints(service: Service, port: int) -> list[tuple[str, int]]:
            return [(addresses[pod.name], port) for pod in istio_config.pods(spec)
                    if all(pod.labels.get(k) == v for k, v in service.selector.items())]

        def bind(service: Service, port: int) -> tuple[str, int]:
            return ports.LOOPBACK, 0

        try:
            config = builtin.sidecar_config(spec, vips, endpoints, bind, extra)
        except LabError as exc:
            return Rendered(error=str(exc))
        boot = xds_bootstrap.build(
            istio_config.node_id(self.block.client),
            istio_config.node_metadata(spec, self.block.client, istiod.ISTIO_VERSION_METADATA),
            (ports.LOOPBACK, 0), (self.block.istiod, 1), (self.block.dns, REDIS_PORT))
        boot.pop("dynamic_resources")
        boot["static_resources"] = config
        try:
            sidecar.validate(sidecar.write(boot, self.directory / f"builtin-{self.count}.json"))
        except LabError as exc:
            return Rendered(error=str(exc))
        return self._run_envoy(boot, f"builtin-{self.count}", dynamic=False)

    # ---- istiod -------------------------------------------------------------------------------
    def istiod(self, spec: LabSpec, extra: Sequence[Document] = ()) -> Rendered:
        self.count += 1
        work = self.directory / f"istiod-{self.count}"
        work.mkdir(parents=True, exist_ok=True)
        (work / "logs").mkdir(exist_ok=True)
        files = istiod.write_inputs(work, spec, self.block, extra)
        iports = pilot.Ports(self.block.istiod)
        argv = pilot.argv(pilot.require(), files["config"], files["mesh"], files["networks"],
                          iports)
        log = work / "logs" / "istiod.log"
        pid = procs.spawn(istiod.wrapped(argv), log, work)
        try:
            try:
                istiod.wait_ready(iports, pid, log)
            except LabError as exc:  # istiod refused its configuration as a whole
                return Rendered(error=str(exc), rejected=_lines(log))
            boot = xds_bootstrap.build(
                istio_config.node_id(self.block.client),
                istio_config.node_metadata(spec, self.block.client,
                                           istiod.ISTIO_VERSION_METADATA),
                (ports.LOOPBACK, 0), (iports.host, iports.grpc), (self.block.dns, REDIS_PORT))
            rendered = self._run_envoy(boot, f"istiod-{self.count}/envoy", dynamic=True)
        finally:
            procs.stop(pid, "pilot-discovery")
        rendered.rejected += [ln for ln in _lines(log) if "envoyfilter" in ln.lower()
                              or "nack" in ln.lower() or "rejected" in ln.lower()]
        return rendered
