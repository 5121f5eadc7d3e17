"""One `up` or `down` per lab name at a time: a held lock refuses at once, one being taken or
let go this instant is read again, a silent holder is reported without a long wait."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from lab import locks, paths
from tests.conftest import cli
from tests.lifecycle import (
    one_line_error,
)

# ---- the lock -----------------------------------------------------------------------------


def test_a_held_lock_refuses_at_once(home: Path):
    with locks.lab_lock("busy", "being brought up"):
        started = time.monotonic()
        one_line_error(cli("up", "--name", "busy"), f"lab busy is being brought up by pid "
                                                    f"{os.getpid()}")
        one_line_error(cli("down", "--name", "busy"), "is being brought up")
        assert time.monotonic() - started < 30
    assert locks.held_by("busy") is None


def _hold_silently(name: str) -> int:
    """Take the lab's lock the way a holder does in its first instant: locked, nothing written."""
    paths.locks_dir().mkdir(parents=True, exist_ok=True)
    fd = os.open(locks.lock_path(name), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_lock_taken_this_instant_is_read_again_not_reported_anonymously(home: Path):
    # CI once met the winner of an `up` race between its flock and its pid being written
    fd = _hold_silently("instant")
    writer = threading.Timer(0.1, lambda: os.pwrite(fd, b"4242 being brought up\n", 0))
    writer.start()
    try:
        with (pytest.raises(locks.LabBusy, match="lab instant is being brought up by pid 4242"),
              locks.lab_lock("instant", "being brought up")):
            pass
    finally:
        writer.join()
        os.close(fd)


def test_a_lock_let_go_this_instant_is_taken(home: Path):
    fd = _hold_silently("letgo")  # a holder that emptied the file and is about to close it
    closer = threading.Timer(0.1, os.close, (fd,))
    closer.start()
    try:
        with locks.lab_lock("letgo", "being brought up") as held:
            assert held is not None
    finally:
        closer.join()


def test_a_lock_that_stays_silent_is_reported_without_waiting_long(home: Path):
    fd = _hold_silently("mute")
    try:
        started = time.monotonic()
        with (pytest.raises(locks.LabBusy, match="lab mute is held by another process"),
              locks.lab_lock("mute", "being brought up")):
            pass
        assert time.monotonic() - started < 5
    finally:
        os.close(fd)
