"""Start and stop the lab's processes by pid, without touching anything that is not ours."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def spawn(argv: Sequence[str], log: Path, cwd: Path) -> int:
    """Start a process in its own session (Ctrl-C in the terminal does not reach it)."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            list(argv), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    return process.pid


def _stat_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def running(pid: int, expect: str | None = None) -> bool:
    """Alive (not a zombie) and, if `expect` is given, its command line contains it."""
    _reap(pid)
    if os.path.isdir("/proc"):
        state = _stat_state(pid)
        if state is None or state in ("Z", "X"):
            return False
        if expect:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                return False
            return expect.encode() in cmdline
        return True
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def stop(pid: int, expect: str | None = None, grace: float = 5.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL. A pid that is not ours is left."""
    if not running(pid, expect):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not running(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
