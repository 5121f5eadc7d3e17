"""istiod's binary (pilot-discovery): where it comes from, how it is built, how it is run.

The binary is looked up, in order, at `$REDIS_MESH_LAB_PILOT`, in the project's cache
`<cache>/istiod/<module version>+<patch>/pilot-discovery`, and on PATH (only if it says it is
the lab's build). `up` never builds it: a missing binary is one line naming
`redis-mesh-lab tools install istiod`, which builds it into the cache, visibly (`go build`
of the pinned source with the one patch of lab/controlplane/istiod_patch.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lab import paths, settings, versions
from lab.controlplane import istiod_patch
from lab.errors import LabError

BINARY = "pilot-discovery"
INSTALL_HINT = "redis-mesh-lab tools install istiod (or nox -s istiod)"


def build_id() -> str:
    return f"{versions.ISTIOD_MODULE_VERSION}+{istiod_patch.ID}"


def version_string() -> str:
    """What the lab's build says it is (`pilot-discovery version -s`)."""
    return f"{versions.ISTIOD_RELEASE}+redis-mesh-lab.{istiod_patch.ID}"


def cache_dir() -> Path:
    return paths.cache() / "istiod" / build_id()


def _pinned_build(path: str) -> bool:
    result = subprocess.run([path, "version", "-s"], capture_output=True, text=True,
                            timeout=30, check=False)
    return result.stdout.strip() == version_string()


def find() -> str | None:
    override = settings.PILOT.value()
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise LabError(f"{settings.PILOT.name}={override} is not an executable file")
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


def _run(argv: list[str], cwd: Path | None = None, echo: bool = True) -> str:
    if echo:
        print("+ " + " ".join(argv), flush=True)
    result = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv[:3])} ... failed (exit {result.returncode})")
    return result.stdout


def install(echo: bool = True) -> tuple[str, float]:
    """Build pilot-discovery at the pinned version, with the lab's patch, into the cache.

    `go mod download` the pinned istio.io/istio (the Go module proxy), copy its source to
    `<cache>/istiod-src/<version>`, apply lab/controlplane/istiod_patch.py, and `go build`
    ./pilot/cmd/pilot-discovery into `<cache>/istiod/<version>+<patch>/`. Returns (path, s).
    """
    go = go_binary()
    if go is None:
        raise LabError("go not found: istiod is built with Go 1.26+ (the Go module proxy)")
    started = time.monotonic()
    module = f"{versions.ISTIOD_MODULE}@{versions.ISTIOD_MODULE_VERSION}"
    info = json.loads(_run([go, "mod", "download", "-json", module], echo=echo))
    source = paths.cache() / "istiod-src" / versions.ISTIOD_MODULE_VERSION
    if source.exists():
        shutil.rmtree(source)
    source.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(info["Dir"], source)
    for path in source.rglob("*"):  # the module cache is read-only
        path.chmod(path.stat().st_mode | 0o200)
    istiod_patch.apply(source)
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    ldflags = (f"-X istio.io/istio/pkg/version.buildVersion={version_string()} "
               f"-X istio.io/istio/pkg/version.buildGitRevision={versions.ISTIOD_COMMIT}")
    _run([go, "build", "-ldflags", ldflags, "-o", str(target / BINARY),
          "./pilot/cmd/pilot-discovery"], cwd=source, echo=echo)
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
    "INJECT_ENABLED": "false",  # no injection webhook (it would hold /ready at 503)
    "PILOT_ENABLE_ALPN_FILTER": "false",
    "PILOT_ENABLE_METADATA_EXCHANGE": "false",
    "PILOT_ENABLE_WORKLOAD_ENTRY_AUTOREGISTRATION": "false",
    "PILOT_ENABLE_WORKLOAD_ENTRY_HEALTHCHECKS": "false",
    "PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING": "false",
    "PILOT_DEBOUNCE_AFTER": "10ms",
    "PILOT_DEBOUNCE_MAX": "100ms",
}
