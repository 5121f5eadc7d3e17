"""Starting the lab's containers (through testcontainers), each labelled with the lab."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import acl, model
from lab.errors import LabError

from . import engine, images, sidecar

CLIENT_POD = "redis-client"
SIDECAR = "istio-proxy"
INIT = engine.INIT_ROLE
NAMESPACE_SEARCH = ["redis.svc.cluster.local", "svc.cluster.local", "cluster.local"]
SIDECAR_DIR = "sidecar"


@dataclass
class Pods:
    """What one lab's containers need to know: engine, names, addresses, images."""

    client: Any
    lab: str
    directory: Path
    network: str
    tags: dict[str, str]
    ips: dict[str, str]
    aliases: dict[str, list[str]]
    credentials: acl.Credentials

    @property
    def side_dir(self) -> Path:
        return self.directory / SIDECAR_DIR

    def name(self, pod: str) -> str:
        return engine.container_name(self.lab, pod)

    def run(self, pod: str, role: str, command: list[str], *,
            volumes: tuple[tuple[str, str, str], ...] = (), **kwargs: Any) -> Any:
        """A container for `pod` on the lab's network at its IP, with its DNS aliases."""
        from docker.types import EndpointConfig
        from testcontainers.core.container import DockerContainer

        container = DockerContainer(self.tags["redis"]).with_name(self.name(pod))
        container.with_command(command)
        for host, inside, mode in volumes:
            container.with_volume_mapping(host, inside, mode)
        endpoint = EndpointConfig(self.client.api._version, aliases=self.aliases.get(pod, []),
                                  ipv4_address=self.ips[pod])
        container.with_kwargs(labels=engine.labels(self.lab, role), hostname=pod,
                              network=self.network, networking_config={self.network: endpoint},
                              dns_search=NAMESPACE_SEARCH, detach=True, **kwargs)
        return container.start()

    def capture(self) -> str:
        """istio-init: the capture rules installed in the client's namespace (NET_ADMIN)."""
        from testcontainers.core.container import DockerContainer

        rules = self.side_dir / "capture.rules"
        rules.write_text(sidecar.capture_rules(), encoding="utf-8")
        in_client = {"network_mode": f"container:{self.name(CLIENT_POD)}",
                     "cap_add": ["NET_ADMIN", "NET_RAW"],
                     "labels": engine.labels(self.lab, INIT)}
        init = (DockerContainer(self.tags["istio-init"]).with_name(self.name(INIT))
                .with_volume_mapping(str(rules), "/etc/capture.rules", "ro")
                .with_kwargs(entrypoint=["/usr/sbin/iptables-restore", "--noflush",
                                         "/etc/capture.rules"], detach=True, **in_client))
        init.start()
        wrapped = init.get_wrapped_container()
        code = int(wrapped.wait(timeout=30).get("StatusCode", -1))
        log = wrapped.logs().decode(errors="replace")
        wrapped.remove(force=True)
        if code != 0:
            raise LabError(f"istio-init failed (exit {code}): {log.strip()[-300:]}")
        listing = self.client.containers.run(self.tags["istio-init"], ["-t", "nat", "-S"],
                                             entrypoint=["/usr/sbin/iptables"],  # proxyv2's
                                             remove=True, **in_client)  # is pilot-agent
        return log + listing.decode(errors="replace")

    def start_sidecar(self, concurrency: int | None = None) -> None:
        """Envoy as uid 1337 in the client's network namespace; its files in the lab dir."""
        from testcontainers.core.container import DockerContainer

        with contextlib.suppress(PermissionError):  # Envoy writes its admin socket there
            os.chown(self.side_dir, images.ENVOY_UID, images.ENVOY_UID)
        (DockerContainer(self.tags["envoy"]).with_name(self.name(SIDECAR))
         .with_volume_mapping(str(self.side_dir), sidecar.CONFIG_DIR, "rw")
         .with_command(["-c", f"{sidecar.CONFIG_DIR}/{sidecar.CONFIG_FILE}",
                        "--disable-hot-restart", "-l", "warning", "--drain-time-s", "1",
                        *(["--concurrency", str(concurrency)] if concurrency else [])])
         .with_kwargs(labels=engine.labels(self.lab, SIDECAR),
                      network_mode=f"container:{self.name(CLIENT_POD)}",
                      user=f"{images.ENVOY_UID}:{images.ENVOY_UID}", detach=True)
         .start())

    def create_cluster(self, pods: list[str]) -> str:
        """The tutorial's `kubectl exec redis-cluster-0 -- redis-cli --cluster create ...`."""
        argv = ["redis-cli", *self.credentials.cli_args(), "--cluster", "create",
                *[f"{self.ips[p]}:{model.REDIS_PORT}" for p in pods],
                "--cluster-replicas", "1", "--cluster-yes"]
        result = self.client.containers.get(self.name(pods[0])).exec_run(
            argv, environment=self.credentials.cli_env())  # the password never in argv
        output = result.output.decode(errors="replace")
        log = f"docker exec {self.name(pods[0])} " + " ".join(argv) + "\n" + output
        if result.exit_code != 0:
            lines = output.strip().splitlines()
            raise LabError(f"redis-cli --cluster create failed: {lines[-1] if lines else ''}")
        return log
