"""Start and stop the lab's processes, never touching one that is not ours.

A process is known by its pid *and* its start time (field 22 of /proc/<pid>/stat), so a
pid the kernel reused for someone else's process is never signalled. Every process a lab
starts also carries the lab's label in its environment (REDIS_MESH_LAB_ID=<lab dir>), so
`down` finds it even when the journal is lost or corrupt.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from lab import settings
from lab.state import Process

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks after boot; None if it does not exist."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])  # field 22 overall; fields[0] is field 3


def _stat_state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def spawn(argv: Sequence[str], log: Path, cwd: Path, label: str | None = None) -> int:
    """Start a process in its own session (Ctrl-C in the terminal does not reach it)."""
    env = dict(os.environ)
    if label:
        env[settings.LAB_ID.name] = label
    with open(log, "ab") as out:
        process = subprocess.Popen(
            list(argv), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        )
    return process.pid


def launch(name: str, argv: Sequence[str], log: Path, cwd: Path, label: str, *,
           expect: str = "", record: Callable[[Process], object] | None = None) -> Process:
    """Spawn and describe the process fully (pid, start time, argv, cwd, log) for the journal.

    SIGINT/SIGTERM/SIGHUP are held back until `record` (the journal's update) has run, so an
    interruption can never fall between a process starting and its being recorded.
    """
    with _critical():
        pid = spawn(argv, log, cwd, label)
        process = Process(name=name, pid=pid, expect=expect, started=start_time(pid) or 0,
                          argv=list(argv), cwd=str(cwd), log=str(log))
        if record is not None:
            record(process)
    return process


def relaunch(process: Process, label: str) -> Process:
    """Start a stopped process again exactly as before (argv, cwd, log, label)."""
    return launch(process.name, process.argv, Path(process.log), Path(process.cwd), label,
                  expect=process.expect)


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


def alive(process: Process) -> bool:
    """This very process (same pid and start time) is running and not a zombie."""
    if not process.started:
        return running(process.pid, process.expect or None)
    _reap(process.pid)
    fields = _stat_fields(process.pid)
    if fields is None or fields[0] in ("Z", "X") or len(fields) < 20:
        return False
    return int(fields[19]) == process.started


def _wait_exit(fd: int, pid: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while True:
        _reap(pid)
        if _stat_state(pid) in (None, "Z", "X"):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        poller.poll(min(remaining, 0.2) * 1000)


def terminate(process: Process, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """`sig` (SIGTERM), up to `grace` seconds, then SIGKILL; a reused pid is left alone.

    The signal goes through a pidfd opened *before* the start time is checked, so the
    process checked is the process signalled.
    """
    if not process.started:
        stop(process.pid, process.expect or None, grace)
        return
    try:
        fd = os.pidfd_open(process.pid)
    except OSError:
        return
    try:
        if not alive(process):
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, sig)
        if _wait_exit(fd, process.pid, grace):
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        _wait_exit(fd, process.pid, 5.0)
    finally:
        os.close(fd)


def send(process: Process, sig: int) -> None:
    """Send `sig` if the pid is still the recorded process (checked through a pidfd, as
    `terminate` does); a process that is gone is left alone."""
    try:
        fd = os.pidfd_open(process.pid)
    except OSError:
        return
    try:
        if alive(process):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, sig)
    finally:
        os.close(fd)


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


def labels() -> Iterator[tuple[str, int, int]]:
    """(label, pid, start time) of every live process with a lab label in its environment
    (those whose environment can be read: a user's own, or every one for root)."""
    prefix = f"{settings.LAB_ID.name}=".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        label = next((item[len(prefix):] for item in environ.split(b"\0")
                      if item.startswith(prefix)), None)
        if label is not None:
            started = start_time(pid)
            if started is not None and _stat_state(pid) not in ("Z", "X"):
                yield label.decode(errors="replace"), pid, started


def labelled(label: str) -> list[Process]:
    """Every live process carrying `label` in its environment (the lab's own, by label)."""
    return [Process(name=f"pid {pid}", pid=pid, started=started)
            for found, pid, started in labels() if found == label]


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP, turned into the same clean-up path as Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    """Shared by `interruptible` and `_critical`: what fired, whether it must wait."""

    fired: list[int] = []
    depth = 0
    pending: int | None = None
    nesting = 0  # interruptible() within interruptible(): the pytest plugin, then a backend's up


def interrupted() -> int | None:
    """Within an `interruptible()`: the signal that interrupted it, if one did."""
    return _Signals.fired[0] if _Signals.nesting and _Signals.fired else None


@contextlib.contextmanager
def _critical() -> Iterator[None]:
    """A signal arriving within is raised only at its end (after the journal is updated).

    Signals are deferred, not blocked: a blocked mask would be inherited by the child.
    """
    _Signals.depth += 1
    try:
        yield
    finally:
        _Signals.depth -= 1
    if _Signals.depth == 0 and _Signals.pending is not None:
        signum, _Signals.pending = _Signals.pending, None
        raise Interrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within: SIGINT, SIGTERM and SIGHUP raise `Interrupted` (a KeyboardInterrupt).

    Only the first signal interrupts; later ones are ignored so the clean-up can finish.
    Outside the main thread (where handlers cannot be installed) this does nothing.
    """
    def handler(signum: int, _frame: FrameType | None) -> None:
        if _Signals.fired:
            return
        _Signals.fired.append(signum)
        if _Signals.depth:
            _Signals.pending = signum
            return
        raise Interrupted(signum)

    if _Signals.nesting and _Signals.fired:
        # an enclosing interruptible() was interrupted and something went on regardless
        # (a clean-up that provisions, a fixture after the signal): start nothing new
        raise Interrupted(_Signals.fired[0])
    try:
        previous = {sig: signal.signal(sig, handler) for sig in HANDLED}
    except ValueError:  # not the main thread
        yield
        return
    if not _Signals.nesting:  # a nested one keeps what the outer one saw
        _Signals.fired = []
        _Signals.pending = None
    _Signals.nesting += 1
    try:
        yield
    finally:
        _Signals.nesting -= 1
        for sig, old in previous.items():
            signal.signal(sig, old)
