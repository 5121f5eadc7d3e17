"""SIGTERM/SIGINT/SIGHUP during a run: one signal stops it, nested `interruptible()` included."""

from __future__ import annotations

import contextlib
import os
import signal
import types

import pytest

from lab.procs import Interrupted, interruptible
from lab.pytest_plugin import pytest_keyboard_interrupt, without_lineless_frames


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


def _interrupted_at_an_instruction_without_a_line() -> pytest.ExceptionInfo[BaseException]:
    """An Interrupted whose innermost frame has no line number, as CPython 3.11 reports a
    frame that a signal handler interrupted between lines (seen in CI: pytest lost its
    "Interrupted: SIGTERM" summary to a TypeError)."""
    try:
        try:
            raise ValueError("being handled when the signal came")
        except ValueError:
            raise Interrupted(signal.SIGTERM) from None
    except Interrupted as exc:
        caught = exc
    assert caught.__traceback__ is not None
    frame = caught.__traceback__.tb_frame
    beyond_the_code = len(frame.f_code.co_code) + 64
    caught.__traceback__ = types.TracebackType(caught.__traceback__, frame, beyond_the_code, -1)
    assert caught.__traceback__.tb_lineno is None
    return pytest.ExceptionInfo.from_exception(caught)


def test_an_interruption_between_lines_is_still_reported():
    excinfo = _interrupted_at_an_instruction_without_a_line()
    with pytest.raises(TypeError):
        excinfo.getrepr(funcargs=True)  # what pytest's terminal reporter would do
    excinfo = _interrupted_at_an_instruction_without_a_line()
    pytest_keyboard_interrupt(excinfo)
    shown = str(excinfo.getrepr(funcargs=True))
    assert "Interrupted: SIGTERM" in shown
    assert "test_signals.py" in shown  # the frames that have a line stay


def test_unlinking_keeps_the_order_of_the_frames_with_a_line():
    excinfo = _interrupted_at_an_instruction_without_a_line()
    tb = without_lineless_frames(excinfo.value.__traceback__)
    lines = []
    while tb is not None:
        lines.append(tb.tb_lineno)
        tb = tb.tb_next
    assert lines and None not in lines
