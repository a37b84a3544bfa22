"""The core's policy: one definition of each rule, behaviour as before the move."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollout.core.plan import Stage, StageKind
from rollout.core.policy import LEASE_FLOOR, judge_sizing, lease_for, shadow_rate, stage_number


@pytest.mark.parametrize(("kind", "min_samples", "expected"), [
    (StageKind.RAMP, 0, (20, 1_000)),
    (StageKind.RAMP, 50, (50, 1_000)),
    (StageKind.RAMP, 300, (100, 1_000)),
    (StageKind.RAMP, 5_000, (100, 5_000)),
    (StageKind.SHADOW, 200, (100, 500)),
    (StageKind.SHADOW, 800, (100, 800)),
])
def test_the_judges_sizing_is_what_reconcile_used(kind: StageKind, min_samples: int, expected: tuple[int, int]) -> None:
    sizing = judge_sizing(Stage("s", kind, min_samples=min_samples))
    assert (sizing.min_samples, sizing.planned_samples) == expected


@given(interval=st.integers(1, 600), checks=st.lists(st.floats(0, 120), max_size=20))
def test_the_lease_outlasts_a_sleep_and_two_of_the_slowest_checks(interval: int, checks: list[float]) -> None:
    # Between two renewals a controller sleeps one interval and runs at most two checks
    lease = lease_for(timedelta(seconds=interval), checks)
    gap = timedelta(seconds=interval + 2 * max(checks, default=0.0))
    assert lease > gap and lease >= LEASE_FLOOR


def test_the_lease_before_any_check_is_three_intervals_with_a_floor() -> None:
    assert lease_for(timedelta(seconds=30)) == timedelta(seconds=90)
    assert lease_for(timedelta(seconds=1)) == LEASE_FLOOR


@pytest.mark.parametrize(("document", "index", "expected"), [
    ({"stages": [{"name": "shadow", "rate_limit": 5}]}, 0, 5.0),
    ({"stages": [{"name": "shadow", "rate_limit": 0}]}, 0, None),
    ({"stages": [{"name": "shadow", "rate_limit": True}]}, 0, None),
    ({"stages": [{"name": "shadow"}]}, 0, None),
    ({"stages": [{"name": "shadow", "rate_limit": 5}]}, 1, None),
    (None, 0, None),
])
def test_the_shadow_rate_is_read_from_the_stored_plan(document: object, index: int, expected: float | None) -> None:
    assert shadow_rate(document, index) == expected  # type: ignore[arg-type]


def test_stage_numbers_for_people_are_one_based() -> None:
    assert [stage_number(i) for i in (-1, 0, 1, 4)] == [0, 1, 2, 5]
