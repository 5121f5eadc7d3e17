"""The docker backend's images, without an engine: what goes into the root file system."""

from __future__ import annotations

import contextlib
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lab.backends.docker import images
from tests.conftest import needs_binaries
from tests.docker_support import requires_docker

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


class _Images:
    """The part of docker-py's client.images that `images.upstream` uses."""

    def __init__(self, present: set[str], pullable: bool) -> None:
        self.present, self.pullable, self.pulled = set(present), pullable, []

    def get(self, reference: str) -> object:
        from docker.errors import ImageNotFound

        if reference not in self.present:
            raise ImageNotFound(f"No such image: {reference}")
        return object()

    def pull(self, repository: str, tag: str) -> object:
        from docker.errors import APIError

        if not self.pullable:
            raise APIError("Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup "
                           "registry-1.docker.io: no such host")
        self.pulled.append(f"{repository}:{tag}")
        self.present.add(f"{repository}:{tag}")
        return object()


class _Client:
    def __init__(self, present: set[str], pullable: bool = True) -> None:
        self.images = _Images(present, pullable)


def test_upstream_images_are_the_pinned_official_ones_and_pulled_only_when_missing():
    from lab import versions

    refs = dict(versions.UPSTREAM_IMAGES)
    assert refs["redis"].startswith("docker.io/library/redis:")
    assert refs["envoy"].startswith("docker.io/envoyproxy/envoy:v")
    assert refs["istio-init"].startswith("docker.io/istio/proxyv2:")
    client = _Client(present={refs["redis"]})
    assert images.upstream(client) == refs
    assert client.images.pulled == [refs["envoy"], refs["istio-init"]]
    again = _Client(present=set(refs.values()))
    assert images.upstream(again) == refs and again.images.pulled == []


def test_upstream_images_offline_is_one_line_naming_the_image_and_the_way_out():
    from lab import versions
    from lab.errors import LabError

    with pytest.raises(LabError) as caught:
        images.upstream(_Client(present=set(), pullable=False))
    message = str(caught.value)
    assert "\n" not in message
    assert versions.UPSTREAM_IMAGES["redis"] in message and "--images local" in message


def test_an_image_is_named_by_its_contents_not_by_where_or_when(tmp_path: Path):
    """Two venvs with the same binary (other path, other mtime) make the same image."""
    one, two = tmp_path / "venv-a" / "tool", tmp_path / "venv-b" / "tool"
    for path, mtime in ((one, 1_000_000), (two, 2_000_000)):
        path.parent.mkdir()
        path.write_bytes(b"the same bytes")
        os.utime(path, (mtime, mtime))
    recipes = [images.Recipe("probe", lambda: "1", {"/usr/bin/tool": str(p)}) for p in (one, two)]
    assert images.inputs_hash(recipes[0]) == images.inputs_hash(recipes[1])


@requires_docker()
def test_concurrent_ensures_build_an_image_once_and_all_get_it(tmp_path: Path):
    """Eight `up`s at once needing an image nobody has: one builds it, all get its tag."""
    from lab.backends.docker import engine

    marker = tmp_path / "marker"
    marker.write_text(f"{tmp_path}\n")  # unique to this test run: a new image
    recipe_of = lambda: images.Recipe("probe", lambda: "1", {}, files={"/marker": str(marker)})  # noqa: E731
    client = engine.connect()
    built: list[str] = []
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            tags = list(pool.map(lambda _: images.ensure(client, recipe_of(), built.append),
                                 range(8)))
        assert len(set(tags)) == 1 and len(built) == 1, (tags, built)
        assert tags[0].startswith("redis-mesh-lab/probe:1-")
        assert client.images.get(tags[0]).labels[engine.LABEL_INPUTS] == \
            images.inputs_hash(recipe_of())
    finally:
        with contextlib.suppress(Exception):
            client.images.remove(tags[0], force=True)
        client.close()
