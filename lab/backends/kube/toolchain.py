"""`redis-mesh-lab tools install kubernetes`: a kind node image built here, pulled from nowhere.

Every piece comes from the Go module proxy (kind, Kubernetes, etcd, CoreDNS, containerd,
crictl) or from Debian (debootstrap's bookworm with systemd, runc and the CNI plugins), at
the versions pinned in lab/versions.py, and lands in the project's cache under
`<cache>/kubernetes/` (`<cache>` is $REDIS_MESH_LAB_CACHE or ~/.cache/redis-mesh-lab). Go's
own module and build caches live there too (`<cache>/kubernetes/go/`), so nothing is written
to ~/go or ~/.cache/go-build.

The build is a list of named steps (`steps()`), in order. Each step writes into its own
directory `<cache>/kubernetes/<step>-<key>/` (the key is its pinned version, or a hash of the
versions it is made of) and marks it complete with a `.done` file; an image step is complete
only while its image also exists in the engine. A step that was interrupted (Ctrl-C, kill)
left no marker: the next run removes its directory and does it again; a complete step is
skipped ("cached"). Builds run at `nice -n 19`; their output goes to `<cache>/kubernetes/logs/`,
and the terminal gets one line per step with its time, and a progress line every 30 s.

`python -m lab.backends.kube.toolchain smoke` then proves the image: `kind create cluster`
with its own kubeconfig file, a node Ready, CoreDNS running, a pod Running, `kind delete`.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab import paths, versions
from lab.errors import LabError

from . import hostcheck

RECIPE = "1"  # bump when what a step makes changes without a version changing
NICE = ("nice", "-n", "19")
PROGRESS_EVERY = 30.0  # seconds between progress lines of a long step
ARCH = "amd64"

KIND_MODULE = "sigs.k8s.io/kind"
KUBERNETES_MODULE = "k8s.io/kubernetes"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
COREDNS_MODULE = "github.com/coredns/coredns"
CONTAINERD_MODULE = "github.com/containerd/containerd/v2"
CRICTL_MODULE = "sigs.k8s.io/cri-tools"

KUBE_SERVER = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
KUBE_NODE = ("kubelet", "kubeadm", "kubectl")
KUBE_BINARIES = KUBE_SERVER + KUBE_NODE  # built in this order: the apiserver is the longest
CONTAINERD_BINARIES = ("containerd", "ctr", "containerd-shim-runc-v2")

# What kind's base image installs from Debian, less what a single-node lab never uses
# (nfs-common, open-iscsi, fuse-overlayfs); plus Debian's runc and CNI plugins, which the
# upstream image builds from source.
NODE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "conntrack", "iptables", "nftables", "iproute2",
    "ethtool", "util-linux", "mount", "kmod", "libseccomp2", "pigz", "e2fsprogs", "bash",
    "ca-certificates", "curl", "jq", "procps", "runc", "containernetworking-plugins",
)
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def root() -> Path:
    return paths.cache() / "kubernetes"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def base_key() -> str:
    return _digest("base", RECIPE, versions.NODE_DEBIAN_SUITE, *NODE_PACKAGES,
                   versions.KIND_BUILD_VERSION, versions.CONTAINERD_BUILD_VERSION,
                   versions.CRICTL_BUILD_VERSION)


def node_key() -> str:
    return _digest("node", base_key(), versions.KUBERNETES_BUILD_VERSION,
                   versions.ETCD_BUILD_VERSION, versions.COREDNS_BUILD_VERSION,
                   versions.PAUSE_BUILD_VERSION)


def base_image() -> str:
    return f"redis-mesh-lab/kind-base:{base_key()}"


def node_image() -> str:
    """The node image `kind create cluster --image` takes: built here, never pulled."""
    return f"redis-mesh-lab/kind-node:{versions.KUBERNETES_BUILD_VERSION}-{node_key()}"


# --------------------------------------------------------------------------- the plan


@dataclass
class Context:
    """What a step's build function gets: where things are, how to run a command."""

    root: Path
    go: str
    facts: hostcheck.HostFacts
    say: Callable[[str], None]
    step: str = ""

    def dir(self, name: str) -> Path:
        return step_dir(self.root, STEP_BY_NAME[name])

    def go_env(self) -> dict[str, str]:
        go = self.root / "go"
        return {**os.environ, "GOPATH": str(go / "path"), "GOMODCACHE": str(go / "mod"),
                "GOCACHE": str(go / "build"), "GOFLAGS": "-modcacherw -buildvcs=false",
                "GOTOOLCHAIN": "local", "GOWORK": "off", "CGO_ENABLED": "0",
                "GOPROXY": os.environ.get("GOPROXY", "https://proxy.golang.org,direct")}

    def run(self, argv: Sequence[str], cwd: Path | None = None,
            env: Mapping[str, str] | None = None, nice: bool = True,
            stdin: int | None = None) -> str:
        return run_logged(self, list(argv), cwd=cwd, env=env, nice=nice, stdin=stdin)


@dataclass(frozen=True)
class Step:
    name: str
    key: str  # a version, or a hash of the versions it is made of
    summary: str
    build: Callable[[Context, Path], None]
    needs: tuple[str, ...] = ()
    image: Callable[[], str] | None = None  # the docker image it makes, if any
    component: str = ""  # the line "cached" is printed under (several steps may share one)


def step_dir(base: Path, step: Step) -> Path:
    return base / f"{step.name}-{step.key}"


def marker(base: Path, step: Step) -> Path:
    return step_dir(base, step) / ".done"


@dataclass(frozen=True)
class Planned:
    step: Step
    cached: bool


def plan(all_steps: Sequence[Step], complete: Callable[[Step], bool]) -> list[Planned]:
    """Every step in order, each cached or to do. A step whose input was rebuilt is rebuilt
    too: its key names its inputs' versions, but not their build (a rerun of the same
    version could differ), so a rebuilt input invalidates what was made of it."""
    names = {s.name for s in all_steps}
    seen: set[str] = set()
    rebuilt: set[str] = set()
    planned: list[Planned] = []
    for step in all_steps:
        for need in step.needs:
            if need not in names or need not in seen:
                raise ValueError(f"step {step.name} needs {need}, which does not come before it")
        seen.add(step.name)
        cached = complete(step) and not rebuilt.intersection(step.needs)
        if not cached:
            rebuilt.add(step.name)
        planned.append(Planned(step, cached))
    return planned


def image_exists(tag: str) -> bool:
    result = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag],
                            capture_output=True, text=True, check=False)
    return result.returncode == 0


def is_complete(base: Path, step: Step,
                image_present: Callable[[str], bool] = image_exists) -> bool:
    if not marker(base, step).is_file():
        return False
    return step.image is None or image_present(step.image())


# --------------------------------------------------------------------------- running


def run_logged(ctx: Context, argv: list[str], *, cwd: Path | None = None,
               env: Mapping[str, str] | None = None, nice: bool = True,
               stdin: int | None = None) -> str:
    """Run one command of a step: output to the step's log, a progress line every 30 s, a
    LabError naming the log on failure. Returns its output."""
    logs = ctx.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{ctx.step or 'toolchain'}.log"
    full = [*NICE, *argv] if nice else argv
    started = time.monotonic()
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(full)}  (in {cwd or os.getcwd()})\n".encode())
        out.flush()
        offset = out.tell()
        proc = subprocess.Popen(full, cwd=cwd, env=dict(env) if env else None, stdout=out,
                                stderr=subprocess.STDOUT,
                                stdin=stdin if stdin is not None else subprocess.DEVNULL)
        next_progress = started + PROGRESS_EVERY
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                now = time.monotonic()
                if now >= next_progress:
                    next_progress = now + PROGRESS_EVERY
                    lines, last = _progress(log, offset)
                    ctx.say(f"      {ctx.step}: {now - started:.0f} s, {lines} lines of "
                            f"output, last: {last[:70]}")
        except BaseException:
            _stop(proc)
            raise
    output = log.read_bytes()[offset:].decode(errors="replace")
    if proc.returncode != 0:
        last = next((ln for ln in reversed(output.splitlines()) if ln.strip()), "")
        raise LabError(f"{ctx.step}: {' '.join(argv[:3])} ... exited {proc.returncode}: "
                       f"{last.strip()[:200]} (full output: {log})")
    return output


def _progress(log: Path, offset: int) -> tuple[int, str]:
    """How many lines the running command printed, and its last one."""
    with open(log, "rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines), lines[-1].strip() if lines else "-"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """`kill` of the command stops the running build like Ctrl-C does (no orphaned go)."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def go_binary() -> str | None:
    return shutil.which("go") or next(
        (str(p) for p in (Path("/usr/local/go/bin/go"),) if p.is_file()), None)


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def install(say: Callable[[str], None] = print, only: Sequence[str] = ()) -> float:
    """Build every step not yet complete; returns the seconds it took. `only`: those steps
    (and nothing else) for a partial run."""
    started = time.monotonic()
    facts = hostcheck.detect()
    reason = facts.unusable()
    if reason:
        raise LabError(f"cannot build or run kind here: {reason}")
    base = root()
    unknown = sorted(set(only) - set(STEP_BY_NAME))
    if unknown:
        raise LabError(f"no step {', '.join(unknown)}; the steps: {', '.join(STEP_BY_NAME)}")
    todo = plan(STEPS, lambda s: is_complete(base, s))
    if only:
        todo = [p for p in todo if p.step.name in only]
    if all(p.cached for p in todo):
        for component, steps in _components(todo).items():
            say(f"{component:<12} cached ({', '.join(_keys(steps))})")
        say(f"node image {node_image()}: cached ({_fmt(time.monotonic() - started)})")
        return time.monotonic() - started
    go = go_binary()
    if go is None:
        raise LabError("go not found (Go 1.26+ at /usr/local/go/bin/go or on PATH): the "
                       "Kubernetes toolchain is built from the Go module proxy")
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap not found: the kind node's base is a Debian bookworm "
                       "made with it (apt-get install debootstrap)")
    base.mkdir(parents=True, exist_ok=True)
    ctx = Context(base, go, facts, say)
    say(f"host: {facts.describe()}")
    say(f"building into {base} (Go caches in {base / 'go'}, logs in {base / 'logs'})")
    with sigterm_interrupts():
        for index, planned in enumerate(todo, 1):
            step = planned.step
            label = f"[{index:2}/{len(todo)}] {step.name:<24}"
            if planned.cached:
                say(f"{label} cached")
                continue
            waiting = f"{label} waiting for another run building it"
            with step_lock(base, step, functools.partial(say, waiting)):
                if is_complete(base, step):  # that other run finished it
                    say(f"{label} cached")
                    continue
                say(f"{label} {step.summary} ...")
                seconds = _build_step(ctx, step)
            say(f"{label} done in {_fmt(seconds)}")
    total = time.monotonic() - started
    if only:
        say(f"steps {', '.join(only)}: done ({_fmt(total)})")
    else:
        say(f"node image {node_image()} ready ({_fmt(total)})")
    return total


def _build_step(ctx: Context, step: Step) -> float:
    out = step_dir(ctx.root, step)
    if out.exists():  # an interrupted run's leftovers
        _rmtree(out)
    out.mkdir(parents=True)
    ctx.step = step.name
    t0 = time.monotonic()
    step.build(ctx, out)
    seconds = time.monotonic() - t0
    marker(ctx.root, step).write_text(json.dumps({
        "step": step.name, "key": step.key, "seconds": round(seconds, 1),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }) + "\n", encoding="utf-8")
    return seconds


@contextlib.contextmanager
def step_lock(base: Path, step: Step, waiting: Callable[[], None]) -> Iterator[None]:
    """One run at a time builds a step: a second `tools install kubernetes` waits for it
    (the lock goes with the process, so a killed run leaves none behind)."""
    locks = base / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{step.name}.lock", "w", encoding="ascii") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _components(todo: Sequence[Planned]) -> dict[str, list[Step]]:
    grouped: dict[str, list[Step]] = {}
    for planned in todo:
        grouped.setdefault(planned.step.component or planned.step.name, []).append(planned.step)
    return grouped


def _keys(group: Sequence[Step]) -> list[str]:
    return sorted({s.key for s in group})


def _rmtree(path: Path) -> None:
    for p in [path, *path.rglob("*")]:  # go's module cache copies are read-only
        with contextlib.suppress(OSError):
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o700)
    shutil.rmtree(path)


# --------------------------------------------------------------------------- Go programs


def _go_install(ctx: Context, out: Path, package: str, version: str, *,
                ldflags: str = "-s -w", tags: str = "") -> None:
    argv = [ctx.go, "install", "-v", "-trimpath", "-ldflags", ldflags]
    if tags:
        argv += ["-tags", tags]
    ctx.run([*argv, f"{package}@{version}"], env={**ctx.go_env(), "GOBIN": str(out)})


def _mod_download(ctx: Context, module: str, version: str) -> Path:
    out = ctx.run([ctx.go, "mod", "download", "-json", f"{module}@{version}"],
                  env=ctx.go_env(), cwd=ctx.root)
    return Path(json.loads(out[out.index("{"):])["Dir"])


def build_kind(ctx: Context, out: Path) -> None:
    _go_install(ctx, out, KIND_MODULE, versions.KIND_BUILD_VERSION)
    source = _mod_download(ctx, KIND_MODULE, versions.KIND_BUILD_VERSION)
    shutil.copytree(source / "images" / "base" / "files", out / "base-files")


def unstage(gomod: str, staging_version: str) -> str:
    """k8s.io/kubernetes's go.mod without its `=> ./staging/...` replaces, the staged
    modules required at their published version instead (v0.34.2 for Kubernetes 1.34.2)."""
    staged: set[str] = set()
    kept: list[str] = []
    for line in gomod.splitlines():
        found = re.match(r"\s*(?:replace\s+)?(\S+)(?:\s+v\S+)?\s+=>\s+\./staging/", line)
        if found:
            staged.add(found.group(1))
        else:
            kept.append(line)
    result: list[str] = []
    for line in kept:
        found = re.match(r"(\s*(?:require\s+)?)(\S+)\s+v0\.0\.0\b(.*)$", line)
        if found and found.group(2) in staged:
            result.append(f"{found.group(1)}{found.group(2)} {staging_version}{found.group(3)}")
        else:
            result.append(line)
    return "\n".join(result) + "\n"


def staging_version(kubernetes: str) -> str:
    major_minor_patch = kubernetes.lstrip("v").split(".")
    return f"v0.{major_minor_patch[1]}.{major_minor_patch[2]}"


def build_kubernetes_source(ctx: Context, out: Path) -> None:
    source = _mod_download(ctx, KUBERNETES_MODULE, versions.KUBERNETES_BUILD_VERSION)
    src = out / "src"
    shutil.copytree(source, src, ignore=shutil.ignore_patterns("vendor", "go.work*"))
    for path in [src, *src.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
    gomod = src / "go.mod"
    gomod.write_text(unstage(gomod.read_text(encoding="utf-8"),
                             staging_version(versions.KUBERNETES_BUILD_VERSION)),
                     encoding="utf-8")
    # resolve the published staging modules (and go.sum) once, before the builds
    ctx.run([ctx.go, "mod", "download"], cwd=src, env={**ctx.go_env(), "GOFLAGS":
            "-modcacherw -buildvcs=false -mod=mod"})


def kube_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.gitVersion={version}", f"-X {package}.gitMajor={major}",
                  f"-X {package}.gitMinor={minor}", f"-X {package}.gitTreeState=clean",
                  f"-X {package}.buildDate=1970-01-01T00:00:00Z"]
    return " ".join(flags)


def _kube_binary(name: str) -> Callable[[Context, Path], None]:
    def build(ctx: Context, out: Path) -> None:
        src = ctx.dir("kubernetes-source") / "src"
        ctx.run([ctx.go, "build", "-v", "-mod=mod", "-trimpath", "-ldflags",
                 kube_ldflags(versions.KUBERNETES_BUILD_VERSION), "-o", str(out / name),
                 f"./cmd/{name}"], cwd=src, env=ctx.go_env())
    return build


ETCD_MAIN = """package main

// etcd, as the etcd release's own binary runs it: the server's etcdmain.

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
\tetcdmain.Main(os.Args)
}
"""


def build_etcd(ctx: Context, out: Path) -> None:
    src = out / "src"
    src.mkdir()
    (src / "go.mod").write_text(f"module redis-mesh-lab.local/etcd\n\ngo 1.24\n\nrequire "
                                f"{ETCD_MODULE} {versions.ETCD_BUILD_VERSION}\n",
                                encoding="utf-8")
    (src / "main.go").write_text(ETCD_MAIN, encoding="utf-8")
    ctx.run([ctx.go, "mod", "tidy"], cwd=src, env=ctx.go_env())
    ctx.run([ctx.go, "build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"),
             "."],
            cwd=src, env=ctx.go_env())


def build_coredns(ctx: Context, out: Path) -> None:
    _go_install(ctx, out, COREDNS_MODULE, versions.COREDNS_BUILD_VERSION)


def build_containerd(ctx: Context, out: Path) -> None:
    version = versions.CONTAINERD_BUILD_VERSION
    ldflags = (f"-s -w -X {CONTAINERD_MODULE}/version.Version={version} "
               f"-X {CONTAINERD_MODULE}/version.Package=redis-mesh-lab")
    for name in CONTAINERD_BINARIES:
        _go_install(ctx, out, f"{CONTAINERD_MODULE}/cmd/{name}", version, ldflags=ldflags,
                    tags="no_aufs no_zfs no_btrfs no_devmapper")


def build_crictl(ctx: Context, out: Path) -> None:
    version = versions.CRICTL_BUILD_VERSION
    _go_install(ctx, out, f"{CRICTL_MODULE}/cmd/crictl", version,
                ldflags=f"-s -w -X {CRICTL_MODULE}/pkg/version.Version={version.lstrip('v')}")


PAUSE_MAIN = """package main

// The pod sandbox's process: sleeps until told to stop, reaps the zombies it inherits.
// (The lab's own, a few lines of Go, in place of the pause image.)

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tif len(os.Args) > 1 && os.Args[1] == "-v" {
\t\tos.Stdout.WriteString("pause (redis-mesh-lab) %s\\n")
\t\treturn
\t}
\tsignals := make(chan os.Signal, 8)
\tsignal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor sig := range signals {
\t\tif sig == syscall.SIGCHLD {
\t\t\tfor {
\t\t\t\tvar status syscall.WaitStatus
\t\t\t\tpid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
\t\t\t\tif pid <= 0 || err != nil {
\t\t\t\t\tbreak
\t\t\t\t}
\t\t\t}
\t\t\tcontinue
\t\t}
\t\tos.Exit(0)
\t}
}
"""


def build_pause(ctx: Context, out: Path) -> None:
    src = out / "src"
    src.mkdir()
    (src / "go.mod").write_text("module redis-mesh-lab.local/pause\n\ngo 1.24\n",
                                encoding="utf-8")
    (src / "main.go").write_text(PAUSE_MAIN % versions.PAUSE_BUILD_VERSION, encoding="utf-8")
    ctx.run([ctx.go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "pause"), "."],
            cwd=src, env=ctx.go_env())


# --------------------------------------------------------------------------- the node base


def debian_mirror(sources: Sequence[Path] = (Path("/etc/apt/sources.list.d/debian.sources"),
                                             Path("/etc/apt/sources.list"))) -> str:
    """The Debian mirror apt uses here (debootstrap fetches from the same place)."""
    for path in sources:
        with contextlib.suppress(OSError):
            text = path.read_text(encoding="utf-8")
            found = (re.search(r"^URIs:\s*(\S+/debian)/?\s*$", text, re.M)
                     or re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s", text, re.M))
            if found:
                return found.group(1)
    return "http://deb.debian.org/debian"


def build_debootstrap(ctx: Context, out: Path) -> None:
    rootfs = out / "rootfs"
    ctx.run(["debootstrap", "--variant=minbase", f"--include={','.join(NODE_PACKAGES)}",
             versions.NODE_DEBIAN_SUITE, str(rootfs), debian_mirror()])


def cri_base_spec(spec: dict[str, object]) -> dict[str, object]:
    """containerd's default OCI spec as kind's base image makes it: kind's hook that mounts
    the product files appended to createContainer hooks, no rlimits."""
    result = json.loads(json.dumps(spec))
    hooks = result.setdefault("hooks", {})
    hooks.setdefault("createContainer", []).append({"path": "/kind/bin/mount-product-files.sh"})
    result.get("process", {}).pop("rlimits", None)
    return dict(result)


def build_base_rootfs(ctx: Context, out: Path) -> None:
    """The debootstrap tree + kind's images/base/files + containerd + crictl, set up as kind's
    base Dockerfile does (systemd units enabled, unwanted ones removed, kmsg off)."""
    rootfs = out / "rootfs"
    ctx.run(["cp", "-a", str(ctx.dir("debootstrap") / "rootfs"), str(rootfs)])
    files = ctx.dir("kind") / "base-files"
    for source in sorted(files.rglob("*")):
        if source.is_dir():
            continue
        relative = source.relative_to(files)
        target = rootfs / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        executable = relative.parts[0] == "usr" or relative.parts[:2] == ("kind", "bin")
        target.chmod(0o755 if executable else 0o644)
    for directory in ("kind", "kind/bin"):
        (rootfs / directory).chmod(0o755)
    bin_dir = rootfs / "usr" / "local" / "bin"
    for name in CONTAINERD_BINARIES:
        shutil.copy2(ctx.dir("containerd") / name, bin_dir / name)
    shutil.copy2(ctx.dir("crictl") / "crictl", bin_dir / "crictl")
    spec = json.loads(ctx.run([str(ctx.dir("containerd") / "ctr"), "oci", "spec"], nice=False))
    (rootfs / "etc" / "containerd" / "cri-base.json").write_text(
        json.dumps(cri_base_spec(spec), indent=2) + "\n", encoding="utf-8")
    cni = rootfs / "opt" / "cni"
    cni.mkdir(parents=True, exist_ok=True)
    (cni / "bin").symlink_to("/usr/lib/cni")  # Debian's containernetworking-plugins
    system = rootfs / "lib" / "systemd" / "system"
    for pattern in ("sysinit.target.wants/systemd-tmpfiles-setup.service",
                    "multi-user.target.wants/*", "local-fs.target.wants/*",
                    "sockets.target.wants/*udev*", "sockets.target.wants/*initctl*",
                    "basic.target.wants/*"):
        for path in system.glob(pattern):
            path.unlink()
    for path in (rootfs / "etc" / "systemd" / "system").glob("*.wants/*"):
        path.unlink()
    with open(rootfs / "etc" / "systemd" / "journald.conf", "a", encoding="utf-8") as conf:
        conf.write("ReadKMsg=no\n")
    init = rootfs / "sbin" / "init"
    if init.exists() or init.is_symlink():
        init.unlink()
    init.symlink_to("/usr/lib/systemd/systemd")
    ctx.run(["chroot", str(rootfs), "systemctl", "enable", "kubelet.service",
             "containerd.service", "undo-mount-hacks.service"])
    ctx.run(["chroot", str(rootfs), "systemctl", "mask", "systemd-binfmt.service"])
    (rootfs / "etc" / "kubernetes" / "manifests").mkdir(parents=True, exist_ok=True)
    for leftovers in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for path in (rootfs / leftovers).glob("*"):
            if path.is_file():
                path.unlink()


def build_base_image(ctx: Context, out: Path) -> None:
    """`docker import` of the tree, then one `docker build` adding STOPSIGNAL (which
    `docker import --change` does not take)."""
    rootfs = ctx.dir("base-rootfs") / "rootfs"
    imported = f"redis-mesh-lab/kind-base-import:{base_key()}"
    archive = out / "rootfs.tar"
    ctx.run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(archive),
             "."])
    ctx.run(["docker", "import", "--change", "ENV container=docker",
             "--change", 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
             str(archive), imported], nice=False)
    archive.unlink()
    dockerfile = out / "Dockerfile"
    dockerfile.write_text(f"FROM {imported}\nSTOPSIGNAL SIGRTMIN+3\n", encoding="utf-8")
    ctx.run(["docker", "build", "--network=none", "-t", base_image(), "-f", str(dockerfile),
             str(out)], nice=False)
    with contextlib.suppress(LabError):
        ctx.run(["docker", "rmi", imported], nice=False)


# --------------------------------------------------------------------------- images, node


@dataclass
class ImageSpec:
    """One minimal image: files at paths, docker import --change lines, the tags it bears."""

    name: str
    files: dict[str, Path]  # path in the image -> file here
    changes: list[str]
    tags: list[str] = field(default_factory=list)


PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def required_images(ctx: Context) -> list[str]:
    """What kubeadm of this version pulls, as it says (`kubeadm config images list`)."""
    kubeadm = ctx.dir("kubeadm") / "kubeadm"
    out = ctx.run([str(kubeadm), "config", "images", "list", "--kubernetes-version",
                   versions.KUBERNETES_BUILD_VERSION], nice=False)
    return [line.strip() for line in out.splitlines()
            if re.fullmatch(r"[a-z0-9.-]+(/[\w.-]+)+:[\w.-]+", line.strip())]


def assign_tags(required: Sequence[str]) -> dict[str, list[str]]:
    """{our image: the tags it bears}. Each of kubeadm's images must be one we built at the
    version kubeadm asks for: a mismatch is an error, not a silently mislabelled image."""
    wanted = {
        "kube-apiserver": versions.KUBERNETES_BUILD_VERSION,
        "kube-controller-manager": versions.KUBERNETES_BUILD_VERSION,
        "kube-scheduler": versions.KUBERNETES_BUILD_VERSION,
        "kube-proxy": versions.KUBERNETES_BUILD_VERSION,
        "etcd": versions.ETCD_BUILD_VERSION.lstrip("v"),
        "coredns": versions.COREDNS_BUILD_VERSION,
        "pause": versions.PAUSE_BUILD_VERSION,
    }
    tags: dict[str, list[str]] = {name: [] for name in wanted}
    for reference in required:
        repository, _, tag = reference.rpartition(":")
        name = repository.rsplit("/", 1)[-1]
        if name not in wanted:
            raise LabError(f"kubeadm {versions.KUBERNETES_BUILD_VERSION} wants {reference}, "
                           "which this toolchain does not build")
        ours = wanted[name]
        if not (tag == ours or tag.startswith(ours + "-")):
            raise LabError(f"kubeadm {versions.KUBERNETES_BUILD_VERSION} wants {reference}; "
                           f"this toolchain builds {name} {ours} (lab/versions.py)")
        tags[name].append(reference)
    # containerd's sandbox image in kind's config.toml (kind pulls it unless present)
    tags["pause"].append("registry.k8s.io/pause:3.10")
    return tags


def image_specs(ctx: Context, tags: Mapping[str, list[str]]) -> list[ImageSpec]:
    local = "/usr/local/bin/"
    specs = [ImageSpec(name, {local + name: ctx.dir(name) / name},
                       [f"ENV PATH={PATH_ENV}"]) for name in KUBE_SERVER[:3]]
    specs.append(kube_proxy_spec(ctx))
    specs += [
        ImageSpec("etcd", {local + "etcd": ctx.dir("etcd") / "etcd"},
                  [f"ENV PATH={PATH_ENV}"]),
        ImageSpec("coredns", {"/coredns": ctx.dir("coredns") / "coredns"},
                  ['ENTRYPOINT ["/coredns"]']),
        ImageSpec("pause", {"/pause": ctx.dir("pause") / "pause"},
                  ['ENTRYPOINT ["/pause"]']),
    ]
    for spec in specs:
        spec.tags = list(tags.get(spec.name, []))
    return specs


def kube_proxy_spec(ctx: Context) -> ImageSpec:
    """kube-proxy and the iptables it drives (the host's nft flavour, with its libraries and
    extensions, as the docker backend's istio-init image)."""
    from lab.backends.docker import images as docker_images

    files: dict[str, Path] = {"/usr/local/bin/kube-proxy": ctx.dir("kube-proxy") / "kube-proxy"}
    multi = shutil.which("xtables-nft-multi", path=PATH_ENV)
    if multi is None:
        raise LabError("xtables-nft-multi not found (Debian's iptables): kube-proxy's image "
                       "carries the host's iptables")
    files["/usr/sbin/xtables-nft-multi"] = Path(multi).resolve()
    extensions = Path("/usr/lib/x86_64-linux-gnu/xtables")
    plugins = sorted(extensions.glob("lib*.so")) if extensions.is_dir() else []
    for plugin in plugins:
        files[str(plugin)] = plugin
    for name in ("conntrack",):
        found = shutil.which(name, path=PATH_ENV)
        if found:
            files[f"/usr/sbin/{name}"] = Path(found).resolve()
    for lib in docker_images.shared_libraries(str(Path(multi).resolve()),
                                              *(str(p) for p in plugins)):
        files.setdefault(lib, Path(lib).resolve())
    return ImageSpec("kube-proxy", files, [f"ENV PATH={PATH_ENV}"])


IPTABLES_LINKS = ("iptables", "iptables-save", "iptables-restore", "ip6tables",
                  "ip6tables-save", "ip6tables-restore")


def rootfs_tar(spec: ImageSpec, out: Path) -> None:
    dirs: set[str] = {"tmp", "etc", "root", "var", "var/run", "run"}
    for path in spec.files:
        parts = Path(path.lstrip("/")).parents
        dirs.update(str(p) for p in parts if str(p) != ".")
    links = {}
    if "/usr/sbin/xtables-nft-multi" in spec.files:
        links = {f"usr/sbin/{name}": "xtables-nft-multi" for name in IPTABLES_LINKS}
    with tarfile.open(out, "w") as tar:
        for directory in sorted(dirs):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        for dest, source in sorted(spec.files.items()):
            info = tarfile.TarInfo(dest.lstrip("/"))
            stat = source.stat()
            info.size, info.mode = stat.st_size, stat.st_mode & 0o7777 | 0o444
            with open(source, "rb") as handle:
                tar.addfile(info, handle)
        for name, target in sorted(links.items()):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP),
                           ("etc/nsswitch.conf", "hosts: files dns\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


def repack_with_repositories(saved: Path, out: Path, tags: Sequence[str]) -> None:
    """A `docker save` archive rewritten so that its `repositories` comes first and names every
    tag fully qualified: kind reads the first of `manifest.json`/`repositories` it meets, and
    from manifest.json only the first image (and docker shortens docker.io names there)."""
    with tarfile.open(saved) as source:
        members = source.getmembers()
        manifest = json.loads(_read_member(source, "manifest.json"))
        by_short: dict[str, str] = {}
        for entry in manifest:
            layer_id = Path(entry["Layers"][-1]).parent.name
            for tag in entry.get("RepoTags") or []:
                by_short[tag] = layer_id
        repositories: dict[str, dict[str, str]] = {}
        for tag in tags:
            short = _docker_short(tag)
            if short not in by_short:
                raise LabError(f"docker save of {saved.name} has no {short}")
            repository, _, version = tag.rpartition(":")
            repositories.setdefault(repository, {})[version] = by_short[short]
        with tarfile.open(out, "w") as target:
            data = json.dumps(repositories).encode()
            info = tarfile.TarInfo("repositories")
            info.size, info.mode = len(data), 0o644
            target.addfile(info, io.BytesIO(data))
            for member in members:
                if member.name == "repositories":
                    continue
                handle = source.extractfile(member) if member.isfile() else None
                target.addfile(member, handle)


def _read_member(archive: tarfile.TarFile, name: str) -> bytes:
    handle = archive.extractfile(name)
    if handle is None:
        raise LabError(f"a docker save archive without {name}")
    return handle.read()


def _docker_short(reference: str) -> str:
    """How docker names a reference in `docker save`'s manifest.json."""
    if reference.startswith("docker.io/library/"):
        return reference.removeprefix("docker.io/library/")
    return reference.removeprefix("docker.io/")


# kind's node-image build wants these addon images; none of them is on the Go module proxy
# (kindnetd) or needed by the lab (local-path storage): they are the pause image under those
# names, so nothing is pulled. Clusters made from this image disable kind's default CNI.
def kind_addon_images(kind_source: Path) -> list[str]:
    found: list[str] = []
    for name in ("const_cni.go", "const_storage.go"):
        path = kind_source / "pkg" / "build" / "nodeimage" / name
        found += re.findall(r'Image\s*=\s*"([^"]+)"', path.read_text(encoding="utf-8"))
    return found


def build_images(ctx: Context, out: Path) -> None:
    """The control-plane images as kind's `--type file` wants them: kube-apiserver.tar (also
    carrying etcd, CoreDNS, pause and the addon names), kube-controller-manager.tar,
    kube-scheduler.tar, kube-proxy.tar."""
    tags = assign_tags(required_images(ctx))
    kind_source = _mod_download(ctx, KIND_MODULE, versions.KIND_BUILD_VERSION)
    tags["pause"] += kind_addon_images(kind_source)
    specs = image_specs(ctx, tags)
    local: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        for spec in specs:
            archive = Path(tmp) / f"{spec.name}.rootfs.tar"
            rootfs_tar(spec, archive)
            tag = f"redis-mesh-lab/kind-{spec.name}:{node_key()}"
            argv = ["docker", "import"]
            for change in spec.changes:
                argv += ["--change", change]
            ctx.run([*argv, str(archive), tag], nice=False)
            for reference in spec.tags:
                ctx.run(["docker", "tag", tag, reference], nice=False)
            local[spec.name] = tag
        groups = {"kube-apiserver": ["kube-apiserver", "etcd", "coredns", "pause"],
                  "kube-controller-manager": ["kube-controller-manager"],
                  "kube-scheduler": ["kube-scheduler"], "kube-proxy": ["kube-proxy"]}
        by_name = {spec.name: spec for spec in specs}
        for archive_name, members in groups.items():
            references = [ref for member in members for ref in by_name[member].tags]
            saved = Path(tmp) / f"{archive_name}.saved.tar"
            ctx.run(["docker", "save", "-o", str(saved),
                     *(_docker_short(ref) for ref in references)], nice=False)
            repack_with_repositories(saved, out / f"{archive_name}.tar", references)
    (out / "tags.json").write_text(json.dumps({"local": local, "tags": tags}, indent=2) + "\n",
                                   encoding="utf-8")


def build_server_tarball(ctx: Context, out: Path) -> None:
    """kubernetes-server-linux-amd64.tar.gz as kind's `--type file` reads it."""
    target = out / f"kubernetes-server-linux-{ARCH}.tar.gz"
    version = versions.KUBERNETES_BUILD_VERSION.encode()
    entries: list[tuple[str, Path]] = [
        (f"kubernetes/server/bin/{name}", ctx.dir(name) / name) for name in KUBE_NODE]
    entries += [(f"kubernetes/server/bin/{name}.tar", ctx.dir("images") / f"{name}.tar")
                for name in KUBE_SERVER]
    with gzip.open(target, "wb", compresslevel=1) as raw, \
            tarfile.open(fileobj=raw, mode="w") as tar:
        for directory in ("kubernetes", "kubernetes/server", "kubernetes/server/bin"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("kubernetes/version")
        info.size, info.mode = len(version), 0o644
        tar.addfile(info, io.BytesIO(version))
        for name, path in entries:
            tar.add(path, arcname=name)


def wrapper_dir(base: Path) -> Path:
    return base / "hostfix" / "bin"


def kind_env(ctx_root: Path, facts: hostcheck.HostFacts) -> dict[str, str]:
    """kind's environment: on a restricted host, the docker wrapper first on its PATH."""
    env = dict(os.environ)
    if facts.needs_wrapper:
        wrapper = write_docker_wrapper(ctx_root, facts)
        env["PATH"] = f"{wrapper.parent}:{env.get('PATH', '')}"
    return env


def build_node_image(ctx: Context, out: Path) -> None:
    tarball = ctx.dir("server-tarball") / f"kubernetes-server-linux-{ARCH}.tar.gz"
    env = {**kind_env(ctx.root, ctx.facts), "TMPDIR": str(out)}
    ctx.run([str(ctx.dir("kind") / "kind"), "build", "node-image", "--type", "file",
             "--base-image", base_image(), "--image", node_image(), str(tarball)], env=env)
    for extracted in out.glob("k8s-tar-extract-*"):  # kind leaves its extraction behind
        _rmtree(extracted)


# --------------------------------------------------------------------------- the docker wrapper

# kind's `docker run` and `docker exec` arguments, rewritten where this host refuses them.
PRIVILEGED_RUN = ("--cap-add=ALL", "--cap-drop=SYS_RESOURCE",
                  "--security-opt=systempaths=unconfined", "--device-cgroup-rule=a *:* rwm",
                  "--device=/dev/kmsg")

CGROUP_REMOUNT = """#!/bin/sh
# redis-mesh-lab: without --privileged the node's cgroup v1 controllers are mounted
# read-only; kind's entrypoint and kubelet need them writable. Then kind's own entrypoint.
# (Each controller is a read-only bind mount: `remount,bind,rw` flips the mount's flag.)
if [ ! -e /sys/fs/cgroup/cgroup.controllers ]; then
  mount -o remount,rw /sys/fs/cgroup 2>/dev/null
  # mountinfo: the mount point is field 5, the type follows the "-" after optional fields
  mounts=$(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") {
    if ($(i + 1) == "cgroup" && $5 ~ "^/sys/fs/cgroup/") print $5; break } }' /proc/self/mountinfo)
  for dir in $mounts; do
    mount -o remount,bind,rw "$dir" || echo "redis-mesh-lab: cannot remount $dir rw" >&2
  done
fi
exec /usr/local/bin/entrypoint /sbin/init "$@"
"""


def rewrite_docker_args(args: Sequence[str], facts: hostcheck.HostFacts,
                        remount_script: str | None) -> list[str]:
    """kind's docker arguments as this host accepts them. Only `run` and `exec` with
    `--privileged` change (and the /lib/modules mount where there is none)."""
    if not args or args[0] not in ("run", "exec") or "--privileged" not in args:
        return list(args)
    result: list[str] = []
    skip = False
    for index, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == "--privileged" and not facts.privileged_works:
            if args[0] == "run":
                result += PRIVILEGED_RUN
            continue  # exec: the container's own capabilities
        if (arg in ("--volume", "-v") and index + 1 < len(args)
                and args[index + 1].startswith("/lib/modules:") and not facts.lib_modules):
            skip = True
            continue
        result.append(arg)
    if (args[0] == "run" and remount_script and not facts.privileged_works
            and not facts.cgroup_v2):
        image = result.pop()  # kind puts the image last, with no arguments after it
        result += ["--volume", f"{remount_script}:/kind/rml-cgroup-rw:ro",
                   "--entrypoint", "/kind/rml-cgroup-rw", image]
    return result


WRAPPER = """#!{python}
# redis-mesh-lab's docker wrapper for kind on a host where --privileged cannot work
# (written by lab/backends/kube/toolchain.py; used only there).
import os, sys
sys.path[:0] = {path!r}
from lab.backends.kube import hostcheck, toolchain
facts = hostcheck.HostFacts(cap_bnd={cap!r}, lib_modules={lib_modules!r},
                            cgroup_v2={cgroup_v2!r}, docker={docker!r})
args = toolchain.rewrite_docker_args(sys.argv[1:], facts, {remount!r})
os.execv({real!r}, [{real!r}, *args])
"""


def write_docker_wrapper(base: Path, facts: hostcheck.HostFacts) -> Path:
    directory = wrapper_dir(base)
    directory.mkdir(parents=True, exist_ok=True)
    remount = directory.parent / "cgroup-rw.sh"
    remount.write_text(CGROUP_REMOUNT, encoding="utf-8")
    remount.chmod(0o755)
    real = shutil.which("docker", path=os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != directory))
    if real is None:
        raise LabError("docker not found on PATH")
    package_root = str(Path(__file__).resolve().parents[3])
    wrapper = directory / "docker"
    wrapper.write_text(WRAPPER.format(
        python=sys.executable, path=[package_root], cap=facts.cap_bnd,
        lib_modules=facts.lib_modules, cgroup_v2=facts.cgroup_v2, docker=facts.docker,
        remount=str(remount), real=real), encoding="utf-8")
    wrapper.chmod(0o755)
    return wrapper


# --------------------------------------------------------------------------- the steps

V = versions


def _steps() -> list[Step]:
    kube = V.KUBERNETES_BUILD_VERSION
    steps = [
        Step("kind", V.KIND_BUILD_VERSION, f"go install {KIND_MODULE}@{V.KIND_BUILD_VERSION}",
             build_kind),
        Step("kubernetes-source", kube, f"{KUBERNETES_MODULE}@{kube} without ./staging "
             f"replaces", build_kubernetes_source, component="kubernetes"),
    ]
    steps += [Step(name, kube, f"go build ./cmd/{name}", _kube_binary(name),
                   needs=("kubernetes-source",), component="kubernetes")
              for name in KUBE_BINARIES]
    steps += [
        Step("etcd", V.ETCD_BUILD_VERSION, f"go build {ETCD_MODULE}@{V.ETCD_BUILD_VERSION} "
             "etcdmain", build_etcd),
        Step("coredns", V.COREDNS_BUILD_VERSION,
             f"go install {COREDNS_MODULE}@{V.COREDNS_BUILD_VERSION}", build_coredns),
        Step("containerd", V.CONTAINERD_BUILD_VERSION,
             f"go install {CONTAINERD_MODULE}/cmd/...@{V.CONTAINERD_BUILD_VERSION}",
             build_containerd),
        Step("crictl", V.CRICTL_BUILD_VERSION,
             f"go install {CRICTL_MODULE}/cmd/crictl@{V.CRICTL_BUILD_VERSION}", build_crictl),
        Step("pause", f"{V.PAUSE_BUILD_VERSION}-r{RECIPE}", "go build the lab's pause",
             build_pause),
        Step("debootstrap", _digest(V.NODE_DEBIAN_SUITE, *NODE_PACKAGES),
             f"debootstrap {V.NODE_DEBIAN_SUITE} (systemd, runc, CNI plugins)",
             build_debootstrap, component="node base"),
        Step("base-rootfs", base_key(), "kind's base files, containerd, crictl, systemd set-up",
             build_base_rootfs, needs=("kind", "containerd", "crictl", "debootstrap"),
             component="node base"),
        Step("base-image", base_key(), "docker import + STOPSIGNAL SIGRTMIN+3",
             build_base_image, needs=("base-rootfs",), image=base_image,
             component="node base"),
        Step("images", node_key(), "control-plane images (docker import, save)",
             build_images, needs=(*KUBE_BINARIES, "etcd", "coredns", "pause", "kind"),
             component="node image"),
        Step("server-tarball", node_key(), f"kubernetes-server-linux-{ARCH}.tar.gz",
             build_server_tarball, needs=("images", *KUBE_NODE), component="node image"),
        Step("node-image", node_key(), "kind build node-image --type file",
             build_node_image, needs=("kind", "base-image", "server-tarball"),
             image=node_image, component="node image"),
    ]
    return steps


STEPS: list[Step] = _steps()
STEP_BY_NAME: dict[str, Step] = {s.name: s for s in STEPS}


# --------------------------------------------------------------------------- the proof

SMOKE_CLUSTER = "rml-smoke"
POD_SUBNET = "10.244.0.0/16"  # kind's default
NODE_POD_CIDR = "10.244.0.0/24"  # the one node's share (controller-manager hands out /24s)


def ptp_conflist(subnet: str = NODE_POD_CIDR) -> str:
    """The CNI config a one-node cluster works with when kindnetd (not on the Go module proxy)
    is not there: Debian's ptp + host-local, portmap for hostPorts."""
    return json.dumps({
        "cniVersion": "1.0.0", "name": "rml-ptp",
        "plugins": [
            {"type": "ptp", "ipMasq": True, "mtu": 1500,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2) + "\n"


def kind_config(facts: hostcheck.HostFacts, conflist: Path | None) -> str:
    """The cluster's kind config: kind's default CNI off when a static conflist stands in,
    and containerd's restrict_oom_score_adj only where the host needs it."""
    lines = ["kind: Cluster", "apiVersion: kind.x-k8s.io/v1alpha4", "networking:",
             f"  podSubnet: {POD_SUBNET}"]
    if conflist is not None:
        lines.append("  disableDefaultCNI: true")
    if not facts.privileged_works:
        lines += ["containerdConfigPatches:", "- |-",
                  '  [plugins."io.containerd.grpc.v1.cri"]',
                  "    restrict_oom_score_adj = true"]
    lines += ["nodes:", "- role: control-plane"]
    if conflist is not None:
        lines += ["  extraMounts:", f"  - hostPath: {conflist}",
                  "    containerPath: /etc/cni/net.d/10-rml-ptp.conflist", "    readOnly: true"]
    return "\n".join(lines) + "\n"


def _smoke_files(work: Path, facts: hostcheck.HostFacts) -> tuple[Path, Path]:
    """The smoke cluster's kubeconfig path (its own file) and kind config."""
    work.mkdir(parents=True, exist_ok=True)
    conflist = work / "10-rml-ptp.conflist"
    conflist.write_text(ptp_conflist(), encoding="utf-8")
    config = work / "kind.yaml"
    config.write_text(kind_config(facts, conflist), encoding="utf-8")
    return work / "kubeconfig", config


def kind_path(base: Path | None = None) -> Path:
    """Where `tools install kubernetes` puts kind (it may not be built yet)."""
    return step_dir(base or root(), STEP_BY_NAME["kind"]) / "kind"


def require_kind() -> str:
    """The kind built here, once its node image is built too; else one line saying how."""
    reason = hostcheck.detect().unusable()
    if reason:
        raise LabError(f"cannot run kind here: {reason}")
    base = root()
    kind = kind_path(base)
    if not (is_complete(base, STEP_BY_NAME["node-image"]) and kind.is_file()):
        raise LabError(f"the kind node image {node_image()} is not built: run `redis-mesh-lab "
                       "tools install kubernetes` (or nox -s kubernetes) first")
    return str(kind)


def smoke(say: Callable[[str], None] = print, name: str = SMOKE_CLUSTER,
          lab_images: bool = False) -> dict[str, float]:
    """kind create cluster from the built node image (own kubeconfig file, never
    ~/.kube/config), a node Ready, CoreDNS available, a pod Running; kind delete cluster.
    With lab_images, the lab's redis, istiod and istio-proxy images are built (where missing),
    loaded into the node (`kind load docker-image`) and a redis pod runs from its image.
    Returns the seconds of each stage."""
    facts = hostcheck.detect()
    reason = facts.unusable()
    if reason:
        raise LabError(f"cannot run kind here: {reason}")
    base = root()
    kind = require_kind()
    kubectl_bin = str(step_dir(base, STEP_BY_NAME["kubectl"]) / "kubectl")
    kubeconfig, config = _smoke_files(base / "smoke", facts)
    env = kind_env(base, facts)
    ctx = Context(base, "", facts, say, step="smoke")
    times: dict[str, float] = {}

    def stage(label: str, argv: list[str], *, quiet: bool = False) -> str:
        t0 = time.monotonic()
        if not quiet:
            say(f"  {label} ...")
        out = ctx.run(argv, env=env, nice=False)
        times[label] = time.monotonic() - t0
        say(f"  {label}: {times[label]:.1f} s")
        return out

    def kubectl(*args: str) -> list[str]:  # its own kubeconfig and cache: nothing in ~/.kube
        return [kubectl_bin, "--kubeconfig", str(kubeconfig),
                "--cache-dir", str(kubeconfig.parent / "kube-cache"), *args]

    say(f"host: {facts.describe()}")
    lab_tags: dict[str, str] = {}
    if lab_images:
        import docker

        from . import labimages

        t0 = time.monotonic()
        lab_tags = labimages.build(docker.from_env(), say)
        times["lab images built"] = time.monotonic() - t0
    stage("kind delete cluster (leftover)", [kind, "delete", "cluster", "--name", name,
                                             "--kubeconfig", str(kubeconfig)], quiet=True)
    try:
        stage("kind create cluster", [kind, "create", "cluster", "--name", name,
                                      "--image", node_image(), "--config", str(config),
                                      "--kubeconfig", str(kubeconfig), "--retain"])
        stage("node Ready", kubectl("wait", "--for=condition=Ready", "node", "--all",
                                    "--timeout=180s"))
        # kind's default StorageClass runs local-path-provisioner, whose image is not built
        # here (its name is an alias of pause, so that kind pulls nothing): removed, the lab
        # uses no persistent volumes.
        stage("local-path storage removed", kubectl(
            "delete", "--wait=false", "--ignore-not-found", "namespace/local-path-storage",
            "storageclass/standard"), quiet=True)
        stage("CoreDNS available", kubectl("-n", "kube-system", "wait",
                                           "--for=condition=Available", "deployment/coredns",
                                           "--timeout=180s"))
        pause = f"registry.k8s.io/pause:{versions.PAUSE_BUILD_VERSION}"
        stage("test pod Running", kubectl("run", "rml-smoke-pod", f"--image={pause}",
                                          "--restart=Never", "--image-pull-policy=Never"),
              quiet=True)
        stage("test pod Ready", kubectl("wait", "--for=condition=Ready", "pod/rml-smoke-pod",
                                        "--timeout=120s"))
        if lab_tags:
            _smoke_lab_images(name, lab_tags, stage=stage, kubectl=kubectl, say=say,
                              times=times)
        out = stage("pods", kubectl("get", "pods", "-A", "-o", "wide"), quiet=True)
        for line in out.splitlines():
            say(f"    {line}")
    finally:  # first delete, then tell (a closed stdout must not leave a cluster behind)
        t0 = time.monotonic()
        ctx.run([kind, "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)],
                env=env, nice=False)
        times["kind delete cluster"] = time.monotonic() - t0
        with contextlib.suppress(OSError):
            say(f"  kind delete cluster: {times['kind delete cluster']:.1f} s")
    return times


def _smoke_lab_images(name: str, lab_tags: Mapping[str, str], *,
                      stage: Callable[..., str], kubectl: Callable[..., list[str]],
                      say: Callable[[str], None], times: dict[str, float]) -> None:
    """The lab's images loaded into the node, listed there, and a redis pod from its own."""
    from . import labimages

    times["kind load docker-image"] = labimages.load(name, list(lab_tags.values()), say)
    listed = stage("crictl images", ["docker", "exec", f"{name}-control-plane", "crictl",
                                     "images"], quiet=True)
    for tag in lab_tags.values():
        if tag.rsplit(":", 1)[0] not in listed:
            raise LabError(f"{tag} is not in the node after kind load")
        say(f"    in the node: {tag}")
    stage("redis pod from the lab's image", kubectl(
        "run", "rml-smoke-redis", f"--image={lab_tags['redis']}", "--restart=Never",
        "--image-pull-policy=Never", "--port=6379", "--expose", "--command", "--",
        "redis-server", "--protected-mode", "no"), quiet=True)
    stage("redis pod Ready", kubectl("wait", "--for=condition=Ready", "pod/rml-smoke-redis",
                                     "--timeout=120s"))
    # through CoreDNS and kube-proxy: the Service's name, resolved and routed from the pod
    # (kube-proxy programs a new Service within a few seconds: retried for up to 30 s)
    service = "rml-smoke-redis.default.svc.cluster.local"
    ping = kubectl("exec", "rml-smoke-redis", "--", "redis-cli", "-h", service, "ping")
    t0 = time.monotonic()
    while True:
        try:
            pong = stage("redis-cli ping via the Service's DNS name", ping, quiet=True)
        except LabError:
            if time.monotonic() - t0 > 30:
                raise
            time.sleep(1)
            continue
        break
    if pong.strip() != "PONG":
        raise LabError(f"redis-cli -h {service} ping answered {pong.strip()!r}")
    say(f"    redis-cli -h {service} ping: {pong.strip()} "
        f"({time.monotonic() - t0:.1f} s after the pod was Ready)")


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "install"
    try:
        if command == "install":
            install(lambda line: print(line, flush=True), only=args[1:])
        elif command == "smoke":
            smoke(lambda line: print(line, flush=True),
                  lab_images="--lab-images" in args[1:])
        else:
            print(f"usage: python -m {__spec__.name if __spec__ else 'toolchain'} "
                  "install [STEP...] | smoke [--lab-images]", file=sys.stderr)
            return 2
    except LabError as exc:
        print(f"redis-mesh-lab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("redis-mesh-lab: interrupted; the step in progress starts over next time",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
