"""What this host lets a kind node do, detected (never assumed).

kind runs every node with `docker run --privileged` and `docker exec --privileged`, and
mounts the host's /lib/modules. Two things seen on this project's machines break that:

- a capability bounding set without CAP_SYS_RESOURCE (CapBnd in /proc/self/status): docker
  cannot grant all capabilities, so `--privileged` fails with "unable to apply caps";
- no /lib/modules on the host: the bind mount has nothing to mount.

Only where one of them is found does the lab put a `docker` wrapper first on kind's PATH
(lab/backends/kube/toolchain.py writes it) that rewrites exactly those arguments, remounts
the node's read-only cgroup v1 controllers read-write before kind's entrypoint runs, and asks
containerd for `restrict_oom_score_adj` (a negative oom_score_adj needs CAP_SYS_RESOURCE).
On an ordinary Linux host nothing of this is used and kind runs unmodified.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CAP_SYS_RESOURCE = 24


def cap_bounding_set(status_text: str) -> int | None:
    """The CapBnd mask of a /proc/<pid>/status text, or None if it has no such line."""
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "CapBnd":
            try:
                return int(value.strip(), 16)
            except ValueError:
                return None
    return None


def has_capability(mask: int, cap: int) -> bool:
    return bool(mask >> cap & 1)


@dataclass(frozen=True)
class HostFacts:
    """What was read from the host; every decision below is a function of these."""

    cap_bnd: int | None  # None: unknown (no /proc): treated as unrestricted
    lib_modules: bool  # /lib/modules exists
    cgroup_v2: bool  # /sys/fs/cgroup is cgroup2
    docker: str | None  # the engine's version, None if no engine answers
    docker_error: str = ""

    @property
    def privileged_works(self) -> bool:
        return self.cap_bnd is None or has_capability(self.cap_bnd, CAP_SYS_RESOURCE)

    @property
    def needs_wrapper(self) -> bool:
        return not self.privileged_works or not self.lib_modules

    def workarounds(self) -> list[str]:
        """One phrase per workaround this host needs (empty on an ordinary host)."""
        found: list[str] = []
        if not self.privileged_works:
            found.append(f"CapBnd {self.cap_bnd:016x} lacks CAP_SYS_RESOURCE: --privileged "
                         "rewritten to all capabilities but SYS_RESOURCE, containerd "
                         "restrict_oom_score_adj = true")
            if not self.cgroup_v2:
                found.append("cgroup v1 without --privileged: the node's controllers "
                             "remounted read-write before kind's entrypoint")
        if not self.lib_modules:
            found.append("no /lib/modules: kind's /lib/modules mount dropped")
        return found

    def describe(self) -> str:
        cgroup = "cgroup v2" if self.cgroup_v2 else "cgroup v1"
        fixes = self.workarounds()
        return (f"docker {self.docker}, {cgroup}: "
                + ("; ".join(fixes) if fixes else "kind runs unmodified"))

    def unusable(self) -> str | None:
        """Why kind cannot run here at all, or None."""
        if self.docker is None:
            return ("kind needs a Docker engine and none answers"
                    + (f" ({self.docker_error})" if self.docker_error else ""))
        return None


def _docker_version() -> tuple[str | None, str]:
    docker = shutil.which("docker")
    if docker is None:
        return None, "no docker command on PATH"
    try:
        out = subprocess.run([docker, "version", "--format", "{{.Server.Version}}"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    if out.returncode != 0 or not out.stdout.strip():
        lines = (out.stderr or out.stdout).strip().splitlines()
        return None, lines[-1][:160] if lines else f"exit {out.returncode}"
    return out.stdout.strip(), ""


def detect(proc_status: Path = Path("/proc/self/status")) -> HostFacts:
    try:
        cap = cap_bounding_set(proc_status.read_text(encoding="ascii", errors="replace"))
    except OSError:
        cap = None
    docker, error = _docker_version()
    return HostFacts(
        cap_bnd=cap,
        lib_modules=os.path.isdir("/lib/modules"),
        cgroup_v2=os.path.exists("/sys/fs/cgroup/cgroup.controllers"),
        docker=docker,
        docker_error=error,
    )
