"""SIGTERM/SIGINT/SIGHUP during a run: one signal stops it, nested `interruptible()` included."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from lab.procs import Interrupted, interruptible


def test_a_signal_raises_interrupted_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted), interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_once_interrupted_a_nested_interruptible_starts_nothing():
    """The plugin's interruptible() wraps a session; a backend's up enters its own. After a
    SIGTERM that something swallowed, a later up (a variant lab) must not start."""
    started = []
    with interruptible():
        with contextlib.suppress(Interrupted):  # a careless clean-up path swallows it
            os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(Interrupted), interruptible():
            started.append("variant lab")
    assert not started


def test_a_nested_interruptible_keeps_the_outer_one_working():
    with interruptible():
        with interruptible():
            pass
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_new_run_after_an_interrupted_one_starts_clean():
    with pytest.raises(Interrupted), interruptible():
        os.kill(os.getpid(), signal.SIGINT)
    with interruptible():
        ran = True
    assert ran
