"""The docker backend's images, without an engine: what goes into the root file system."""

from __future__ import annotations

import tarfile
from pathlib import Path

from lab.backends.docker import images
from tests.conftest import needs_binaries

pytestmark = [needs_binaries]


def _members(recipe: images.Recipe, tmp_path: Path) -> dict[str, tarfile.TarInfo]:
    out = tmp_path / "rootfs.tar"
    images._rootfs(recipe, images._closure(recipe), out)
    with tarfile.open(out) as tar:
        infos = tar.getmembers()
    names = [i.name for i in infos]
    assert len(names) == len(set(names))  # the engine refuses duplicate paths
    return {i.name: i for i in infos}


def test_redis_image_holds_the_binaries_their_libraries_and_etc(tmp_path: Path):
    recipe = images.redis_recipe()
    members = _members(recipe, tmp_path)
    for path in ("usr/local/bin/redis-server", "usr/local/bin/redis-cli", "bin/sleep", "bin/sh",
                 "etc/passwd", "etc/nsswitch.conf", "data", "tmp"):
        assert path in members, path
    libs = images.shared_libraries(recipe.binaries["/usr/local/bin/redis-server"])
    assert libs and all(lib.lstrip("/") in members for lib in libs)
    assert members["usr/local/bin/redis-server"].mode & 0o111
    assert members["tmp"].mode == 0o1777


def test_envoy_image_runs_as_istio_proxy_uid(tmp_path: Path):
    recipe = images.envoy_recipe()
    assert f"USER {images.ENVOY_UID}" in recipe.changes
    assert "usr/local/bin/envoy" in _members(recipe, tmp_path)
    assert f"istio-proxy:x:{images.ENVOY_UID}:" in images.PASSWD


def test_inputs_hash_follows_the_inputs(tmp_path: Path):
    binary = tmp_path / "tool"
    binary.write_bytes(b"one")
    recipe = images.Recipe("probe", lambda: "1", {"/usr/bin/tool": str(binary)})
    first = images.inputs_hash(recipe)
    assert images.inputs_hash(recipe) == first  # stable
    binary.write_bytes(b"three")  # another size: another image
    assert images.inputs_hash(recipe) != first
