"""The wait ledger (lab.waits): each wait point counted once, under its own timer."""

from __future__ import annotations

import threading

import pytest

from lab import waits


@pytest.fixture(autouse=True)
def _clean_ledger():
    waits.reset()
    yield
    waits.reset()


def test_an_inner_wait_is_counted_under_the_outer_ones_timer():
    with waits.waiting(waits.NODE_TIMEOUT), waits.waiting(waits.REPLICATION):
        pass
    taken = waits.taken()
    assert set(taken) == {waits.NODE_TIMEOUT}
    assert taken[waits.NODE_TIMEOUT].count == 1


def test_each_thread_has_its_own_outermost_wait():
    inner = threading.Event()

    def traffic() -> None:
        with waits.waiting(waits.TRAFFIC):
            inner.set()

    with waits.waiting(waits.MIGRATION):
        thread = threading.Thread(target=traffic)
        thread.start()
        thread.join()
    assert inner.is_set()
    assert {name: t.count for name, t in waits.taken().items()} == {
        waits.MIGRATION: 1, waits.TRAFFIC: 1}


def test_a_function_can_be_a_wait_point_and_its_error_still_counts():
    @waits.counted(waits.MIRROR)
    def arrived() -> None:
        raise AssertionError("not yet")

    with pytest.raises(AssertionError):
        arrived()
    assert waits.taken()[waits.MIRROR].count == 1


def test_an_unknown_timer_is_refused():
    with pytest.raises(ValueError, match="unknown timer 'sleep'"), waits.waiting("sleep"):
        pass


def test_every_timer_says_what_bounds_it():
    assert all(len(text) > 20 for text in waits.TIMERS.values())
