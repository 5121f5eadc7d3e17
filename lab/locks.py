"""One lock per lab name: only one `up` or `down` of a lab at a time.

A file lock (flock) on <registry>/.locks/<name>, holding the holder's pid and what it is
doing. The kernel releases it when the holder dies, even on `kill -9`, so a stale lock
cannot exist. `down` removes the lock file; the inode is checked after locking so a file
unlinked meanwhile is never mistaken for the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from lab import paths
from lab.errors import LabError


class LabBusy(LabError):
    """Another process holds the lab's lock."""


class Held:
    """A held lab lock; set `remove` to delete the lock file when it is released."""

    def __init__(self, remove: bool) -> None:
        self.remove = remove


def lock_path(name: str) -> Path:
    return paths.locks_dir() / paths.check_name(name)


# The holder writes "<pid> <doing>" right after it takes the lock and empties the file right
# before it lets go, so a reader can meet an empty file in those two instants. It looks again
# for this long before it settles for the anonymous answer.
_SETTLE_S = 1.0


def _holder(fd: int) -> str | None:
    """"being brought up by pid N" from the lock file, or None while it is empty."""
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip().split(maxsplit=1)
        if len(text) == 2:
            return f"{text[1]} by pid {int(text[0])}"
    return None


@contextlib.contextmanager
def lab_lock(name: str, doing: str, remove: bool = False) -> Iterator[Held]:
    """Hold the lab's lock for the block, or raise LabBusy at once (never wait).

    `doing` is shown to whoever finds the lock taken ("being brought up"); with `remove`,
    the lock file is deleted before it is released (what `down` does).
    """
    directory = paths.locks_dir()
    paths.home(create=True)
    directory.mkdir(mode=0o700, exist_ok=True)
    path = lock_path(name)
    held = Held(remove)
    settle_until = time.monotonic() + _SETTLE_S
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            if holder is None and time.monotonic() < settle_until:
                # taken or being let go this instant: look again (it may be free by now)
                time.sleep(0.01)
                continue
            raise LabBusy(f"lab {name} is {holder or 'held by another process'}") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # unlinked by a `down` between our open and our lock: try again
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {doing}\n".encode(), 0)
        held = Held(remove)
        yield held
    finally:
        if held.remove:
            with contextlib.suppress(OSError):
                path.unlink()
        else:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        os.close(fd)


def held_by(name: str) -> str | None:
    """Who holds the lab's lock right now ("being brought up by pid N"), or None."""
    path = lock_path(name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd) or "held by another process"
        return None
    finally:
        os.close(fd)
