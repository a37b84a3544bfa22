"""The one token bucket (rollout.core.ratelimit), on a clock the test moves by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollout.core.ratelimit import KeyedBuckets, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("rate", "capacity", "granted_at_once", "wait_after"), [
    (10.0, None, 10, 0.1),      # one second's worth banked, then one token every 1/rate
    (0.5, None, 1, 2.0),        # under one a second: still at least one banked
    (100.0, 5.0, 5, 0.01),      # an explicit burst
    (2.0, 1.0, 1, 0.5),         # capacity 1: strictly paced (the eval runner's use)
])
def test_a_full_bucket_grants_its_capacity_then_says_how_long_to_wait(
        rate: float, capacity: float | None, granted_at_once: int, wait_after: float) -> None:
    # Given a full bucket on a stopped clock
    clock = FakeClock()
    bucket = TokenBucket(rate, capacity, clock=clock)
    # When it is asked repeatedly at one instant
    answers = [bucket.take() for _ in range(granted_at_once + 1)]
    # Then exactly its capacity is granted, and the next answer is the time until one more token
    assert answers[:granted_at_once] == [0.0] * granted_at_once
    assert answers[-1] == pytest.approx(wait_after)
    # And once that time has passed, one more is granted
    clock.now += wait_after
    assert bucket.take() == 0.0


@given(rate=st.floats(0.1, 1_000), steps=st.lists(st.floats(0, 2.0), min_size=1, max_size=200))
def test_never_more_than_capacity_plus_rate_times_elapsed(rate: float, steps: list[float]) -> None:
    # Given a bucket and any pattern of calls over time
    clock = FakeClock()
    bucket = TokenBucket(rate, clock=clock)
    granted, start = 0, clock.now
    for step in steps:
        clock.now += step
        granted += bucket.take() == 0.0
    # Then the grants never beat the rate by more than the banked burst
    assert granted <= bucket.capacity + rate * (clock.now - start) + 1e-6


def test_a_clock_going_backwards_grants_nothing_extra() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, clock=clock)
    assert bucket.take() == 0.0
    clock.now -= 50
    assert bucket.take() > 0


def test_wait_paces_callers_with_the_bucket() -> None:
    # Given a paced bucket and a sleep that advances the fake clock
    clock = FakeClock()
    bucket = TokenBucket(4.0, capacity=1.0, clock=clock)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    # When three callers go through it
    for _ in range(3):
        bucket.wait(sleep)
    # Then the first goes at once and the others 1/rate apart
    assert slept == pytest.approx([0.25, 0.25])


def test_keyed_buckets_limit_each_key_alone_and_rate_zero_is_no_limit() -> None:
    clock = FakeClock()
    buckets = KeyedBuckets(1.0, 2.0, clock=clock)
    assert [buckets.take("a") for _ in range(3)][:2] == [0.0, 0.0]
    assert buckets.take("a") > 0 and buckets.take("b") == 0.0
    assert all(KeyedBuckets(0, clock=clock).take("a") == 0.0 for _ in range(100))


def test_keyed_buckets_stay_bounded() -> None:
    buckets = KeyedBuckets(1.0, max_keys=10)
    for i in range(1_000):
        buckets.take(f"key-{i}")
    assert len(buckets._buckets) <= 10


def test_a_rate_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(0)
