"""The outcome buffer keeps the freshest outcomes, retries a failing database, and loses nothing it acknowledged."""

from __future__ import annotations

import threading

from rollout.sdk.buffer import OutcomeBuffer


def _entry(i: int) -> tuple:
    return ((1, None, 0, "a", "default", i), (("m", float(i)),), 0.0)


def test_a_full_buffer_drops_the_oldest_and_counts_them() -> None:
    # Given a database that is stuck, and a buffer of 10
    release = threading.Event()
    written: list[float] = []

    def stuck_write(rows):  # type: ignore[no-untyped-def]
        release.wait()
        written.extend(metrics[0][1] for _prefix, metrics, _at in rows)
        return len(rows)

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
    failures = {"left": 4}
    written: list[float] = []

    def flaky_write(rows):  # type: ignore[no-untyped-def]
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("database restarting")
        written.extend(metrics[0][1] for _prefix, metrics, _at in rows)
        return len(rows)

    buffer = OutcomeBuffer(flaky_write, capacity=1_000, batch_size=50, flush_interval=0.01, max_backoff=0.05)
    for i in range(200):
        buffer.add(_entry(i))
    assert buffer.close(timeout=10)
    assert sorted(written) == [float(i) for i in range(200)]
    assert buffer.write_errors == 4 and "restarting" in (buffer.last_error or "")
