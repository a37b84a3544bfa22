"""A bounded outcome buffer, flushed in batches by one background thread.

`record()` only appends to a deque, so the app's request path never waits on
the database. When the database is down the flusher keeps the batch it holds
and retries it with backoff and jitter; new outcomes keep queueing until the
buffer is full, after which the oldest are dropped and counted. Dropping the
oldest keeps the freshest evidence, which is what the judge needs most.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

log = logging.getLogger("rollout.client")

Entry = tuple[tuple, tuple[tuple[str, float], ...], float]
"""(row prefix, ((metric, value), ...), Unix time): one recorded outcome, handed to `write` in batches."""


class OutcomeBuffer:
    def __init__(
        self,
        write: Callable[[Sequence[Entry]], int],
        *,
        capacity: int = 100_000,
        batch_size: int = 5_000,
        flush_interval: float = 0.5,
        max_backoff: float = 5.0,
        tick: Callable[[], object] | None = None,
    ) -> None:
        self._write = write
        self._tick = tick  # more work for this thread each round (the client's exposure counts)
        self._entries: deque[Entry] = deque(maxlen=capacity)
        self._capacity = capacity
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_backoff = max_backoff
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._closing = False
        self.accepted = 0
        self.dropped = 0
        self.written = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="rollout-outcome-flusher", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._entries) + self._in_flight

    def add(self, entry: Entry) -> None:
        entries = self._entries
        if len(entries) >= self._capacity:
            self.dropped += 1  # the deque's maxlen drops the oldest on append
        entries.append(entry)
        self.accepted += 1
        if len(entries) >= self._batch_size:
            self._wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is stored. False if the timeout ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._entries or self._in_flight:
                self._wake.set()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(0.05 if remaining is None else min(0.05, remaining))
        return True

    def close(self, timeout: float | None = 30.0) -> bool:
        flushed = self.flush(timeout)
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=5)
        if not flushed:
            log.warning("rollout: %d outcomes could not be stored before close: %s", len(self), self.last_error)
        return flushed

    # --- the flusher thread ------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            while self._entries and not self._closing:
                self._write_one_batch()
            if self._tick is not None:
                self._tick()
            with self._idle:
                self._idle.notify_all()

    def _write_one_batch(self) -> None:
        entries = self._entries
        batch: list[Entry] = []
        # popleft is atomic, so record() may keep appending while we drain.
        self._in_flight = 0
        while entries and len(batch) < self._batch_size:
            try:
                batch.append(entries.popleft())
            except IndexError:
                break
            self._in_flight = len(batch)
        delay = 0.05
        while True:
            try:
                self._write(batch)
                self.written += len(batch)
                break
            except Exception as exc:  # noqa: BLE001 - any database fault: keep the batch, retry
                self.write_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("rollout: storing %d outcomes failed, retrying in %.2fs: %s",
                            len(batch), delay, self.last_error)
                if self._closing:
                    return
                time.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self._max_backoff)
        self._in_flight = 0
        with self._idle:
            self._idle.notify_all()
