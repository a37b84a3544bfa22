"""The one rate limiter: a token bucket with an injectable clock.

Used by the HTTP service's per-token limit, the eval gate's runner and the
shadow runner. `rate` tokens arrive a second, at most `capacity` are banked;
`take()` either spends one and answers 0, or spends nothing and answers how
many seconds until one will be there (what a 429's Retry-After needs, and
what a pacer sleeps).

A lock keeps one bucket consistent across threads; uncontended it costs far
less than anything a caller does per token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]
_EPSILON = 1e-9  # waiting exactly the answered time must grant, float rounding notwithstanding


class TokenBucket:
    """`rate` tokens a second, at most `capacity` banked (default: one second's worth, at least 1)."""

    __slots__ = ("_clock", "_lock", "capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float | None = None, *, clock: Clock = time.monotonic) -> None:
        if not rate > 0:
            raise ValueError(f"a token bucket needs a rate > 0 a second, got {rate!r}")
        self.rate = float(rate)
        self.capacity = float(capacity) if capacity is not None else max(1.0, self.rate)
        self.tokens = self.capacity
        self._clock = clock
        self.updated = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Spend one token: 0.0 when there was one, else the seconds until there will be (nothing spent)."""
        with self._lock:
            now = self._clock()
            tokens = min(self.capacity, self.tokens + max(0.0, now - self.updated) * self.rate)
            self.updated = now
            if tokens >= 1.0 - _EPSILON:
                self.tokens = max(0.0, tokens - 1.0)
                return 0.0
            self.tokens = tokens
            return (1.0 - tokens) / self.rate

    def wait(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Block until a token is spent: pacing for callers that must go ahead, only not too fast."""
        while (delay := self.take()) > 0:
            sleep(delay)


class KeyedBuckets:
    """One bucket per key (per API token, per flag), bounded in number.

    Past `max_keys` the idle buckets are forgotten all at once rather than the
    map growing without bound; a forgotten key starts again with a full bucket.
    """

    def __init__(self, rate: float, capacity: float | None = None, *, clock: Clock = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._max = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> float:
        """Like `TokenBucket.take` for `key`'s bucket; always 0 when the rate is 0 (no limit)."""
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._buckets.clear()
            bucket = self._buckets[key] = TokenBucket(self.rate, self.capacity, clock=self._clock)
        return bucket.take()


__all__ = ["Clock", "KeyedBuckets", "TokenBucket"]
