"""Where things live: the manifests, the per-lab state directories, the reports."""

from __future__ import annotations

import os
import re
from pathlib import Path

from lab.errors import LabError

_PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_ROOT = _PACKAGE_DIR.parent

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")


def manifests_dir() -> Path:
    """The manifests: $REDIS_MESH_LAB_MANIFESTS, the source checkout's, or the wheel's copy."""
    override = os.environ.get("REDIS_MESH_LAB_MANIFESTS")
    if override:
        return Path(override)
    for candidate in (_SOURCE_ROOT / "manifests", _PACKAGE_DIR / "_manifests"):
        if (candidate / "k8s").is_dir():
            return candidate
    raise LabError("cannot find the manifests directory; set REDIS_MESH_LAB_MANIFESTS")


def home() -> Path:
    """Root of the labs' state: $REDIS_MESH_LAB_HOME, else ./.lab in the working directory."""
    override = os.environ.get("REDIS_MESH_LAB_HOME")
    return Path(override) if override else Path.cwd() / ".lab"


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise LabError(
            f"invalid lab name {name!r}: use 1-42 lowercase letters, digits and '-'"
        )
    return name


def lab_dir(name: str) -> Path:
    return home() / check_name(name)
