"""istiod's binary (pilot-discovery): where it comes from, how it is built, how it is run.

The binary is looked up, in order, at `$REDIS_MESH_LAB_PILOT`, on PATH (only if it is the
pinned build), and in the project's cache `<cache>/istiod/<module version>/pilot-discovery`.
`up` never builds it: a missing binary is one line naming `redis-mesh-lab tools install
istiod`, which runs `go install` into the cache, visibly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lab import versions
from lab.errors import LabError

BINARY = "pilot-discovery"
INSTALL_HINT = "redis-mesh-lab tools install istiod (or nox -s istiod)"


def cache_dir() -> Path:
    root = os.environ.get("REDIS_MESH_LAB_CACHE") or Path.home() / ".cache" / "redis-mesh-lab"
    return Path(root) / "istiod" / versions.ISTIOD_MODULE_VERSION


def _pinned_build(path: str) -> bool:
    """`go version -m` names the module version a Go binary was built from."""
    go = go_binary()
    if go is None:
        return False
    result = subprocess.run([go, "version", "-m", path], capture_output=True, text=True,
                            timeout=30, check=False)
    return versions.ISTIOD_MODULE_VERSION in result.stdout


def find() -> str | None:
    override = os.environ.get("REDIS_MESH_LAB_PILOT")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise LabError(f"REDIS_MESH_LAB_PILOT={override} is not an executable file")
        return override
    cached = cache_dir() / BINARY
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    on_path = shutil.which(BINARY)
    if on_path and _pinned_build(on_path):
        return on_path
    return None


def require() -> str:
    found = find()
    if found is None:
        raise LabError(f"istiod ({BINARY} {versions.ISTIOD_DESCRIPTION}) is not installed: "
                       f"run {INSTALL_HINT}")
    return found


def go_binary() -> str | None:
    return shutil.which("go") or next(
        (str(p) for p in (Path("/usr/local/go/bin/go"),) if p.is_file()), None)


def install(echo: bool = True) -> tuple[str, float]:
    """`go install` pilot-discovery at the pinned version into the cache; (path, seconds)."""
    go = go_binary()
    if go is None:
        raise LabError("go not found: istiod is built with `go install` (Go 1.26+)")
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    argv = [go, "install", f"{versions.ISTIOD_PACKAGE}@{versions.ISTIOD_MODULE_VERSION}"]
    if echo:
        print(f"GOBIN={target} {' '.join(argv)}", flush=True)
    started = time.monotonic()
    result = subprocess.run(argv, env=os.environ | {"GOBIN": str(target)}, check=False)
    if result.returncode != 0:
        raise LabError(f"go install {versions.ISTIOD_PACKAGE} failed (exit {result.returncode})")
    return str(target / BINARY), time.monotonic() - started


@dataclass(frozen=True)
class Ports:
    """Every listening address of istiod; all on the lab's loopback address."""

    host: str
    grpc: int = 15010  # plaintext xDS
    http: int = 8080  # readiness, debug endpoints
    monitoring: int = 15014
    ctrlz: int = 9876

    def address(self, port: int) -> str:
        return f"{self.host}:{port}"


def argv(binary: str, config_dir: Path, mesh_file: Path, networks_file: Path,
         ports: Ports) -> list[str]:
    return [
        binary, "discovery",
        "--registries=",  # no Kubernetes: ServiceEntries/WorkloadEntries are the registry
        f"--configDir={config_dir}",
        f"--meshConfig={mesh_file}",
        f"--networksConfig={networks_file}",
        f"--grpcAddr={ports.address(ports.grpc)}",
        f"--httpAddr={ports.address(ports.http)}",
        f"--monitoringAddr={ports.address(ports.monitoring)}",
        "--httpsAddr=",  # webhooks multiplexed on httpAddr instead of :15017
        "--secureGRPCAddr=",  # no TLS xDS on :15012
        f"--ctrlz_address={ports.host}", f"--ctrlz_port={ports.ctrlz}",
        "--domain=cluster.local",
        "--log_output_level=default:info",
    ]


# istiod's environment: no CA, none of Istio's own Envoy filters (absent from upstream Envoy).
ENVIRONMENT: Mapping[str, str] = {
    "POD_NAMESPACE": "istio-system",
    "POD_NAME": "istiod-lab",
    "REVISION": "default",
    "ENABLE_CA_SERVER": "false",
    "PILOT_ENABLE_ALPN_FILTER": "false",
    "PILOT_ENABLE_METADATA_EXCHANGE": "false",
    "PILOT_ENABLE_WORKLOAD_ENTRY_AUTOREGISTRATION": "false",
    "PILOT_ENABLE_WORKLOAD_ENTRY_HEALTHCHECKS": "false",
    "PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING": "false",
    "PILOT_DEBOUNCE_AFTER": "10ms",
    "PILOT_DEBOUNCE_MAX": "100ms",
}
