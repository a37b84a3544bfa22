"""The outcome buffer keeps the freshest outcomes, retries a failing database, and keeps its word on flush/close."""

from __future__ import annotations

import threading
import time

import pytest

from rollout.errors import ClientClosedError
from rollout.sdk.buffer import OutcomeBuffer


def _entry(i: int) -> tuple:
    return ((1, None, 0, "a", "default", i), (("m", float(i)),), 0.0)


def _values(batch) -> list[float]:  # type: ignore[no-untyped-def]
    return [entry[1][0][1] for _seq, entry in batch]


def test_a_full_buffer_drops_the_oldest_and_counts_them() -> None:
    # Given a database that is stuck, and a buffer of 10
    release = threading.Event()
    written: list[float] = []

    def stuck_write(_source, batch):  # type: ignore[no-untyped-def]
        release.wait()
        written.extend(_values(batch))

    buffer = OutcomeBuffer(stuck_write, capacity=10, batch_size=1, flush_interval=0.01)
    buffer.add(_entry(0))           # taken by the flusher, which then blocks
    assert buffer.flush(timeout=0.2) is False
    # When 25 more outcomes arrive
    for i in range(1, 26):
        buffer.add(_entry(i))
    # Then the 15 oldest waiting ones were dropped and counted
    assert buffer.dropped == 15
    release.set()
    assert buffer.close(timeout=5)
    assert written == [0.0, *[float(i) for i in range(16, 26)]]
    assert buffer.written == 11


def test_a_failing_database_is_retried_until_every_outcome_is_stored() -> None:
    # Given a database that fails the first 4 writes
    failures = {"left": 4}
    written: list[float] = []

    def flaky_write(_source, batch):  # type: ignore[no-untyped-def]
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("database restarting")
        written.extend(_values(batch))

    buffer = OutcomeBuffer(flaky_write, capacity=1_000, batch_size=50, flush_interval=0.01, max_backoff=0.05,
                           initial_backoff=0.01)
    # When 200 outcomes are added and the buffer is closed
    for i in range(200):
        buffer.add(_entry(i))
    result = buffer.close(timeout=20)
    # Then all of them were stored, each once, and the failures were counted
    assert result.complete and result.stored == 200
    assert sorted(written) == [float(i) for i in range(200)]
    assert buffer.write_errors == 4 and "restarting" in (buffer.last_error or "")


def test_every_outcome_carries_its_own_key_and_a_retry_reuses_it() -> None:
    # Given a write that fails once after the batch was (as far as the caller knows) sent
    seen: list[tuple[int, list[int]]] = []
    failed = {"once": False}

    def write(source, batch):  # type: ignore[no-untyped-def]
        seen.append((source, [seq for seq, _ in batch]))
        if not failed["once"]:
            failed["once"] = True
            raise ConnectionError("reply lost")

    buffer = OutcomeBuffer(write, batch_size=100, flush_interval=0.01, initial_backoff=0.01)
    # When 5 outcomes go through
    for i in range(5):
        buffer.add(_entry(i))
    assert buffer.close(timeout=10)
    # Then both tries carried the same source and the same sequence numbers 0..4
    assert len(seen) == 2 and seen[0] == seen[1] == (buffer.source, [0, 1, 2, 3, 4])


def test_flush_waits_for_what_came_before_it_not_for_what_comes_after() -> None:
    # Given a slow database and a thread that keeps recording
    def slow_write(_source, _batch):  # type: ignore[no-untyped-def]
        time.sleep(0.01)

    buffer = OutcomeBuffer(slow_write, batch_size=100, flush_interval=0.01)
    stop = threading.Event()

    def recorder() -> None:  # ~2,000 a second: below what the database takes, so nothing is dropped
        i = 0
        while not stop.is_set():
            buffer.add(_entry(i))
            i += 1
            time.sleep(0.0005)

    for i in range(100):
        buffer.add(_entry(i))
    thread = threading.Thread(target=recorder)
    thread.start()
    try:
        # When flush() is called while new outcomes keep coming
        before = buffer.accepted
        assert buffer.flush(timeout=30)
        # Then at least everything recorded before the call is stored, though the buffer never empties
        assert buffer.written >= before and buffer.dropped == 0
    finally:
        stop.set()
        thread.join()
        buffer.close(timeout=30)


def test_add_after_close_raises_and_close_reports_what_it_could_not_store() -> None:
    # Given a database that is down for good
    def down(_source, _batch):  # type: ignore[no-untyped-def]
        raise ConnectionError("connection refused")

    buffer = OutcomeBuffer(down, batch_size=7, flush_interval=0.01, initial_backoff=0.01)
    for i in range(20):
        buffer.add(_entry(i))
    # When it is closed with a short timeout
    started = time.monotonic()
    result = buffer.close(timeout=0.5)
    # Then close() returned in about that time and says all 20 were not stored, and counts them
    assert time.monotonic() - started < 5
    assert (result.stored, result.unstored, result.complete) == (0, 20, False)
    assert buffer.dropped == 20 and buffer.unstored_at_close == 20
    # And a later add is refused, not silently accepted
    with pytest.raises(ClientClosedError):
        buffer.add(_entry(99))
    assert buffer.close() == result
