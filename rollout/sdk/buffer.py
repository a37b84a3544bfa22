"""A bounded outcome buffer, flushed in batches by one background thread, that keeps its word.

`record()` only appends to a deque under a short lock, so the app's request
path never waits on the database. Each entry gets the next number of this
buffer's random `source` id: (source, seq) is its idempotency key, so a batch
retried after a lost commit reply is stored once (see rollout.store.outcomes).

When the database is down the flusher keeps the batch it holds and retries it
under the one retry policy (rollout.store.retry: backoff with jitter); new
outcomes keep queueing until the buffer is full, after which the oldest are
dropped and counted. Dropping the oldest keeps the freshest evidence, which is
what the judge needs most.

Entries leave the deque in seq order and one thread writes them in that order,
so "everything numbered below N is settled (stored or counted as dropped)" is
one comparison: that is how `flush()` waits for exactly what was recorded
before it was called, and how `close()` knows what it could not store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rollout.errors import ClientClosedError
from rollout.store.outcomes import new_source
from rollout.store.retry import retrying

log = logging.getLogger("rollout.client")

Keyed = tuple[int, Any]
"""(seq, entry): an entry with its number in this buffer."""

Write = Callable[[int, Sequence[Keyed]], object]
"""write(source, batch): store the batch in one transaction, skipping keys already stored; raise on a fault."""

CLOSE_GRACE = 15.0
"""Seconds close() waits, past its timeout, for a write already on the wire to finish or fail.

The engine's connect/statement/TCP timeouts (rollout.store.db) bound such a
write, so it ends within this; only then is "stored or not" known exactly.
"""


@dataclass(frozen=True, slots=True)
class CloseResult:
    """What close() did with the outcomes still buffered when it began: stored, or not (and counted in `dropped`)."""

    stored: int    # flushed by close() (what was stored before close() began is in stats.outcomes_written)
    unstored: int  # recorded before close() returned and never stored: lost, counted, logged
    in_doubt: int = 0  # a write still hanging after the grace period: maybe stored, counted as unstored too

    @property
    def complete(self) -> bool:
        return self.unstored == 0

    def __bool__(self) -> bool:
        return self.complete


class OutcomeBuffer:
    def __init__(
        self,
        write: Write,
        *,
        capacity: int = 100_000,
        batch_size: int = 5_000,
        flush_interval: float = 0.5,
        max_backoff: float = 5.0,
        initial_backoff: float = 0.05,
        tick: Callable[[], object] | None = None,
    ) -> None:
        self._write = write
        self._tick = tick  # more work for this thread each round (the client's exposure counts)
        self.source = new_source()
        self._entries: deque[Keyed] = deque()
        self._capacity = capacity
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_backoff = max_backoff
        self._initial_backoff = initial_backoff
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._next_seq = 0
        self._in_flight: list[Keyed] = []
        self._closed = False
        self._close_result: CloseResult | None = None
        self.accepted = 0
        self.dropped = 0
        self.written = 0
        self.write_errors = 0
        self.unstored_at_close = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="rollout-outcome-flusher", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._entries) + len(self._in_flight)

    @property
    def closed(self) -> bool:
        return self._closed

    def add(self, entry: Any) -> None:
        """Take one entry, or raise ClientClosedError once close() has begun."""
        with self._lock:
            if self._closed:
                raise ClientClosedError("this client is closed; the outcome was not taken")
            entries = self._entries
            if len(entries) >= self._capacity:
                entries.popleft()
                self.dropped += 1
            entries.append((self._next_seq, entry))
            self._next_seq += 1
            self.accepted += 1
            full = len(entries) >= self._batch_size
        if full:
            self._wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything added before this call is settled (stored, or dropped when the buffer was full).

        Outcomes added meanwhile by other threads are not waited for. False if the timeout ran out first.
        """
        with self._lock:
            target = self._next_seq
        return self._wait_settled(target, timeout)

    def close(self, timeout: float | None = 30.0) -> CloseResult:
        """Refuse new entries, store what is buffered (up to `timeout`), stop, and say exactly what was not stored.

        Calling it again returns the first answer.
        """
        with self._lock:
            if self._close_result is not None:
                return self._close_result
            self._closed = True
            target, written_before = self._next_seq, self.written
        self._wait_settled(target, timeout)
        # Stop retrying; a write already on the wire still ends (stored or failed) within the grace.
        self._stop.set()
        self._wake.set()
        self._thread.join(CLOSE_GRACE)
        with self._lock:
            in_doubt = len(self._in_flight) if self._thread.is_alive() else 0
            unstored = len(self._entries) + len(self._in_flight)
            self.dropped += unstored
            self.unstored_at_close = unstored
            self._entries.clear()
            result = CloseResult(stored=self.written - written_before, unstored=unstored, in_doubt=in_doubt)
            self._close_result = result
            self._settled.notify_all()
        if unstored:
            log.error("rollout: close() could not store %d outcomes (%d in doubt): %s",
                      unstored, in_doubt, self.last_error)
        return result

    # --- settling ------------------------------------------------------------------

    def _settled_below(self) -> int:
        """Every seq below this is settled. Call under the lock."""
        if self._in_flight:
            return self._in_flight[0][0]
        if self._entries:
            return self._entries[0][0]
        return self._next_seq

    def _wait_settled(self, target: int, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._settled:
            while self._settled_below() < target:
                if self._close_result is not None:
                    return False
                self._wake.set()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._settled.wait(0.05 if remaining is None else min(0.05, remaining))
        return True

    # --- the flusher thread ------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            while self._entries and not self._stop.is_set():
                if not self._write_one_batch():
                    break
            if self._tick is not None:
                self._tick()

    def _write_one_batch(self) -> bool:
        with self._lock:
            entries = self._entries
            take = min(len(entries), self._batch_size)
            self._in_flight = [entries.popleft() for _ in range(take)]
        batch = self._in_flight
        try:
            for attempt in retrying(retry_on=self._retry_wanted, initial=self._initial_backoff,
                                    maximum=self._max_backoff, sleep=self._stop.wait,
                                    before_sleep=self._note_retry):
                with attempt:
                    self._write(self.source, batch)
        except Exception:  # noqa: BLE001 - stopping: the batch goes back, close() counts it
            with self._lock:
                self._entries.extendleft(reversed(batch))
                self._in_flight = []
                self._settled.notify_all()
            return False
        with self._lock:
            self.written += len(batch)
            self._in_flight = []
            self._settled.notify_all()
        return True

    def _retry_wanted(self, exc: BaseException) -> bool:
        # Any fault of the store is retried (a poison batch cannot exist: items are validated
        # before they are buffered), until close() asks the flusher to stop.
        self.write_errors += 1
        self._note_error(exc)
        return isinstance(exc, Exception) and not self._stop.is_set()

    def _note_error(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]

    def _note_retry(self, state: Any) -> None:
        log.warning("rollout: storing %d outcomes failed, retrying in %.2fs: %s",
                    len(self._in_flight), state.next_action.sleep if state.next_action else 0.0, self.last_error)
