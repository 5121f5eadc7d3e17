"""Where things live: the manifests, the per-user registry of labs, the reports.

Labs live in one registry per user, whatever the working directory:
$REDIS_MESH_LAB_HOME, else $XDG_STATE_HOME/redis-mesh-lab, else
~/.local/state/redis-mesh-lab. The registry is created with mode 0700: what is inside
(admin socket, admin password, logs) is the lab owner's alone.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from lab import settings
from lab.errors import LabError

_PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_ROOT = _PACKAGE_DIR.parent

_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?")


def manifests_dir() -> Path:
    """The manifests: $REDIS_MESH_LAB_MANIFESTS, the source checkout's, or the wheel's copy."""
    override = settings.MANIFESTS.path()
    if override:
        return override
    for candidate in (_SOURCE_ROOT / "manifests", _PACKAGE_DIR / "_manifests"):
        if (candidate / "k8s").is_dir():
            return candidate
    raise LabError("cannot find the manifests directory; set REDIS_MESH_LAB_MANIFESTS")


def cache() -> Path:
    """The project's build cache (istiod, the kind toolchain, downloaded tools):
    $REDIS_MESH_LAB_CACHE, else ~/.cache/redis-mesh-lab."""
    return settings.CACHE.path() or Path.home() / ".cache" / "redis-mesh-lab"


def _home_path() -> tuple[Path, str]:
    override = settings.HOME.value()
    if override:
        return Path(override).expanduser().absolute(), f"{settings.HOME.name}={override}"
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "redis-mesh-lab", f"XDG_STATE_HOME={xdg}"
    return Path.home() / ".local" / "state" / "redis-mesh-lab", "~/.local/state/redis-mesh-lab"


def home(create: bool = False) -> Path:
    """The registry of this user's labs; with `create`, made (mode 0700) if missing.

    A registry that is not a usable directory is a one-line error naming where it came from.
    """
    path, origin = _home_path()
    try:
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except FileNotFoundError:
        if create:
            raise LabError(f"cannot create the lab registry {path} ({origin})") from None
        return path
    except OSError as exc:
        raise LabError(f"cannot use the lab registry {path} ({origin}): "
                       f"{exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise LabError(f"the lab registry {path} ({origin}) is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise LabError(f"cannot read the lab registry {path} ({origin}): permission denied")
    if create:
        if info.st_uid != os.getuid():
            raise LabError(f"the lab registry {path} ({origin}) belongs to uid {info.st_uid}, "
                           f"not to you (uid {os.getuid()})")
        if stat.S_IMODE(info.st_mode) & 0o077:
            try:
                path.chmod(0o700)
            except OSError as exc:
                raise LabError(f"cannot make the lab registry {path} private: "
                               f"{exc.strerror or exc}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise LabError(f"the lab registry {path} ({origin}) is not writable")
    return path


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise LabError(
            f"invalid lab name {name!r}: use 1-42 lowercase letters, digits and '-'"
        )
    return name


def lab_dir(name: str) -> Path:
    return home() / check_name(name)


def locks_dir() -> Path:
    return home() / ".locks"
