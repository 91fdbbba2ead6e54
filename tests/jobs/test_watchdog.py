"""The stall guard: a stream that stops instead of waiting forever."""

from __future__ import annotations

import threading
import time

import pytest

from jobs.common.watchdog import StreamStalled, stall_guarded


def _stream(release: threading.Event, first_delay: float = 0.0):
    time.sleep(first_delay)
    yield 1
    yield 2
    release.wait()  # a pipeline that never delivers its next row
    yield 3


def test_a_stream_that_stops_delivering_raises_after_the_timeout():
    release = threading.Event()
    got, started = [], time.monotonic()
    with pytest.raises(StreamStalled, match="no row for 0.3 s"):
        for item in stall_guarded(_stream(release), 0.3):
            got.append(item)
    assert got == [1, 2]
    assert time.monotonic() - started < 5
    release.set()


def test_the_wait_for_the_first_item_is_not_limited():
    release = threading.Event()
    release.set()
    assert list(stall_guarded(_stream(release, first_delay=0.5), 0.2)) == [1, 2, 3]


def test_errors_of_the_stream_reach_the_consumer_and_zero_disables_the_guard():
    def failing():
        yield 1
        raise ValueError("block lost")

    with pytest.raises(ValueError, match="block lost"):
        list(stall_guarded(failing(), 5))
    release = threading.Event()
    release.set()
    assert list(stall_guarded(_stream(release), 0)) == [1, 2, 3]
