"""kind/istioctl resolution: PATH at the pinned version, the cache, a checksummed download
(exercised with a local file:// URL: no network), and one-line errors naming what is missing."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from lab import versions
from lab.backends.kube import tools
from lab.errors import LabError
from lab.versions import Artifact, ToolRelease

PLATFORM = tools.host_platform()


@pytest.fixture(autouse=True)
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("REDIS_MESH_LAB_CACHE", str(cache))
    monkeypatch.delenv("REDIS_MESH_LAB_KIND", raising=False)
    monkeypatch.delenv("REDIS_MESH_LAB_ISTIOCTL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    (tmp_path / "bin").mkdir()
    return cache


def fake_tool(path: Path, prints: str) -> Path:
    path.write_text(f"#!/bin/sh\necho '{prints}'\n")
    path.chmod(0o755)
    return path


def tarball(path: Path, member: str, payload: bytes) -> str:
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(member)
        info.size = len(payload)
        info.mode = 0o755
        archive.addfile(info, io.BytesIO(payload))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def release(url: str, sha: str | None, member: str | None, name: str = "istioctl",
            version: str = "9.9.9") -> ToolRelease:
    return ToolRelease(name, version, {PLATFORM: Artifact(url, sha, member)})


def test_download_verifies_extracts_and_caches(tmp_path: Path, cache: Path) -> None:
    archive = tmp_path / "istioctl-9.9.9.tar.gz"
    payload = b"#!/bin/sh\necho 'client version: 9.9.9'\n"
    sha = tarball(archive, "istioctl", payload)
    rel = release(archive.as_uri(), sha, "istioctl")
    found = tools.resolve(rel)
    assert found == str(cache / "istioctl-9.9.9" / "istioctl")
    assert Path(found).read_bytes() == payload and os.access(found, os.X_OK)
    assert (cache / "istioctl-9.9.9" / "sha256").read_text().strip() == sha
    archive.unlink()  # the cache answers from now on, no download
    assert tools.resolve(rel) == found


def test_bare_binary_download(tmp_path: Path) -> None:
    binary = fake_tool(tmp_path / "kind-linux", "kind v9.9.9 go1.22 linux/amd64")
    sha = hashlib.sha256(binary.read_bytes()).hexdigest()
    found = tools.resolve(release(binary.as_uri(), sha, None, name="kind"))
    assert Path(found).read_bytes() == binary.read_bytes()


def test_checksum_mismatch_is_refused(tmp_path: Path, cache: Path) -> None:
    archive = tmp_path / "istioctl.tar.gz"
    tarball(archive, "istioctl", b"evil")
    with pytest.raises(LabError, match="checksum mismatch"):
        tools.resolve(release(archive.as_uri(), "0" * 64, "istioctl"))
    assert not (cache / "istioctl-9.9.9" / "istioctl").exists()


def test_unpinned_asset_is_never_downloaded(tmp_path: Path) -> None:
    def no_fetch(url: str, dest: Path) -> None:
        raise AssertionError("downloaded an unpinned asset")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tools, "fetch", no_fetch)
        with pytest.raises(LabError, match=r"istioctl 9\.9\.9 not found.*on PATH"):
            tools.resolve(release("https://example.invalid/x.tar.gz", None, "istioctl"))


def test_tutorial_istioctl_has_no_pin_and_says_how_to_get_it() -> None:
    assert versions.TUTORIAL.istioctl.downloads["linux-amd64"].sha256 is None
    with pytest.raises(LabError) as caught:
        tools.resolve(versions.TUTORIAL.istioctl)
    message = str(caught.value)
    assert "istioctl 1.7.3" in message and "REDIS_MESH_LAB_ISTIOCTL" in message
    assert "\n" not in message


def test_path_binary_used_only_at_the_pinned_version(tmp_path: Path) -> None:
    rel = release("https://example.invalid/none", None, None, name="kind", version="0.20.0")
    fake_tool(tmp_path / "bin" / "kind", "kind v0.20.0 go1.20.4 linux/amd64")
    assert tools.resolve(rel) == str(tmp_path / "bin" / "kind")
    fake_tool(tmp_path / "bin" / "kind", "kind v0.31.0 go1.25 linux/amd64")
    with pytest.raises(LabError, match=r"kind is 0\.31\.0"):
        tools.resolve(rel)


def test_env_override_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = fake_tool(tmp_path / "my-istioctl", "1.7.3")
    monkeypatch.setenv("REDIS_MESH_LAB_ISTIOCTL", str(mine))
    assert tools.resolve(versions.TUTORIAL.istioctl) == str(mine)
    monkeypatch.setenv("REDIS_MESH_LAB_ISTIOCTL", str(tmp_path / "missing"))
    with pytest.raises(LabError, match="is not executable"):
        tools.resolve(versions.TUTORIAL.istioctl)


def test_every_pin_is_a_sha256_or_explicitly_none() -> None:
    for profile in versions.ISTIO_PROFILES.values():
        for rel in (profile.kind, profile.istioctl):
            assert "linux-amd64" in rel.downloads
            for artifact in rel.downloads.values():
                assert artifact.url.startswith("https://github.com/")
                assert rel.version in artifact.url
                assert artifact.sha256 is None or len(artifact.sha256) == 64
    assert versions.MODERN.kind.downloads["linux-amd64"].sha256 is not None
    assert versions.MODERN.istioctl.downloads["linux-amd64"].sha256 is not None
    assert versions.TUTORIAL.kind.downloads["linux-amd64"].sha256 is not None
