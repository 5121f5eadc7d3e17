"""What the lifecycle tests share (test_registry, test_lab_lock, test_up_refusals,
test_interruptions, test_races, test_running_lab): every scenario ends by checking that, once
`down` has run (or `up` failed), nothing of the lab is left: no process carrying its label or
running under the registry, no port it journaled still bound, no lock file, no directory."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from lab import ports, procs
from tests.conftest import ROOT, processes_under


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("redis-mesh-lab: error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def journal_ports(home: Path, name: str) -> set[int]:
    """Every port a lab's journal names (nodes and their bus ports, mirror, proxy)."""
    path = home / name / "state.json"
    if not path.is_file():
        return set()
    data = json.loads(path.read_text())
    found = set()
    journaled = (data.get("local") or {}).get("ports", {})
    for port in journaled.get("nodes", []):
        found |= {port, port + ports.CLUSTER_BUS_OFFSET}
    found |= {journaled[k] for k in ("mirror", "proxy") if k in journaled}
    return found


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_nothing_left(home: Path, name: str, lab_ports: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    where = str(home / name)
    wait_for(lambda: not processes_under(where), 10, f"processes under {where} to exit")
    assert not procs.labelled(str(home / name))
    assert not (home / name).exists()
    lock = home / ".locks" / name
    assert not lock.exists(), "the lab's lock file is left"
    # The workers' labs share loopback: another test's lab may take a port this one freed a
    # moment ago. A bound port is this lab's leftover unless every process holding it is
    # someone else's (none mentions the registry in its command line, environment or cwd).
    busy = {p: holders(p) for p in lab_ports if listening(p)}
    left = {p: pids for p, pids in busy.items()
            if (not pids and listening(p)) or any(_mentions(pid, str(home)) for pid in pids)}
    assert not left, f"ports still bound (port: holding pids): {left}"


def holders(port: int) -> list[int]:
    """Pids of the processes holding a TCP socket bound to `port` (any state but TIME_WAIT)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if (int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] != "06"
                        and fields[9] != "0"):
                    inodes.add(f"socket:[{fields[9]}]")
    pids = []
    for proc in Path("/proc").iterdir() if inodes else ():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
    return pids


def _mentions(pid: int, marker: str) -> bool:
    proc = Path(f"/proc/{pid}")
    try:
        seen = [(proc / "cmdline").read_bytes(), (proc / "environ").read_bytes(),
                os.readlink(proc / "cwd").encode()]
    except OSError:
        return False  # gone meanwhile: it holds nothing any more
    return any(marker.encode() in text for text in seen)


def listening(port: int) -> bool:
    """Something holds the port (SO_REUSEADDR: a closed connection in TIME_WAIT does not)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ports.LOOPBACK, port))
        except OSError:
            return True
    return False


def start_up(*args: str, cwd: Path = ROOT,
             env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "lab", "up", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def read_until(process: subprocess.Popen[bytes], needle: str, timeout: float = 120,
               stdout: bool = False) -> str:
    """Read the process's stderr (or stdout) as it comes (progress lines end only when a
    step ends)."""
    stream = process.stdout if stdout else process.stderr
    assert stream is not None
    seen = b""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    while needle.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or (process.poll() is not None and not select.select([fd], [], [], 0)[0]):
            raise AssertionError(f"{needle!r} never appeared: {seen.decode(errors='replace')}")
        if select.select([fd], [], [], min(left, 0.5))[0]:
            chunk = os.read(fd, 4096)
            if not chunk and process.poll() is not None:
                continue
            seen += chunk
    return seen.decode(errors="replace")


def kill_9_during_up(name: str, step: str) -> None:
    """Start `up --name name` and SIGKILL it once its progress shows `step`."""
    process = start_up("--name", name)
    read_until(process, step)
    process.kill()
    process.wait(timeout=30)
