"""Ramp windows: when a rollout may advance, and the controller waiting for one while harm still rolls back."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.core.windows import RampWindow, describe_window, format_days, is_open, next_open, parse_days

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = RampWindow(days=parse_days("mon-thu"), start=time(9), end=time(16), tz="Europe/Berlin")
NIGHT = RampWindow(days=parse_days("fri"), start=time(22), end=time(6), tz="UTC")


def at(text: str, tz: ZoneInfo = BERLIN) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


@pytest.mark.parametrize(("spec", "days"), [
    ("mon-thu", {0, 1, 2, 3}),
    ("mon,wed,fri", {0, 2, 4}),
    ("fri-mon", {4, 5, 6, 0}),
    ("Saturday-Sunday, wed", {5, 6, 2}),
    ("daily", set(range(7))),
    ("tue", {1}),
])
def test_day_specs_name_weekdays(spec: str, days: set[int]) -> None:
    # Given a day spec, When parsed, Then it names those weekdays and prints back compactly
    assert parse_days(spec) == frozenset(days)
    assert parse_days(format_days(parse_days(spec))) == frozenset(days)


@pytest.mark.parametrize("spec", ["", "mon-xyz", "funday"])
def test_a_bad_day_spec_is_refused_in_words(spec: str) -> None:
    with pytest.raises(ValueError, match="weekday"):
        parse_days(spec)


def test_an_unknown_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        RampWindow(days=frozenset({0}), start=time(9), end=time(16), tz="Mars/Olympus")


@pytest.mark.parametrize(("window", "now", "open_", "next_"), [
    # (window, now, is it open, when it next opens)
    (OFFICE, at("2026-12-01T10:00"), True, at("2026-12-01T10:00")),            # Tuesday morning
    (OFFICE, at("2026-12-01T16:00"), False, at("2026-12-02T09:00")),           # closes at 16:00 sharp
    (OFFICE, at("2026-12-01T08:59"), False, at("2026-12-01T09:00")),
    (OFFICE, at("2026-12-03T17:00"), False, at("2026-12-07T09:00")),           # Thursday evening -> Monday
    (OFFICE, at("2026-12-05T12:00"), False, at("2026-12-07T09:00")),           # Saturday
    (OFFICE, datetime(2026, 12, 1, 8, 30, tzinfo=UTC), True, datetime(2026, 12, 1, 8, 30, tzinfo=UTC)),  # 09:30 Berlin
    (NIGHT, at("2026-12-05T03:00", ZoneInfo("UTC")), True, at("2026-12-05T03:00", ZoneInfo("UTC"))),  # Sat 03:00
    (NIGHT, at("2026-12-05T06:00", ZoneInfo("UTC")), False, at("2026-12-11T22:00", ZoneInfo("UTC"))),
    (NIGHT, at("2026-12-04T21:00", ZoneInfo("UTC")), False, at("2026-12-04T22:00", ZoneInfo("UTC"))),
])
def test_is_open_and_next_open(window: RampWindow, now: datetime, open_: bool, next_: datetime) -> None:
    # Given a window and a moment, Then it says whether it is open and when it opens next
    assert window.is_open(now) is open_
    assert window.next_open(now) == next_


def test_no_windows_means_always_open_and_a_naive_time_is_refused() -> None:
    now = at("2026-12-05T03:00")
    assert is_open((), now) and next_open((), now) == now
    with pytest.raises(ValueError, match="aware"):
        OFFICE.is_open(datetime(2026, 12, 1, 10))


def test_the_status_line_says_when_the_next_window_opens() -> None:
    class Plan:
        windows = (OFFICE,)

    assert describe_window(Plan(), at("2026-12-01T10:00")).startswith("ramp window open now")
    assert describe_window(Plan(), at("2026-12-03T17:00")) == (
        "ramp window closed: stages advance from Mon 2026-12-07 08:00 UTC (mon-thu 09:00-16:00 Europe/Berlin)")
    assert "none" in describe_window(object(), at("2026-12-03T17:00"))


windows = st.builds(
    RampWindow,
    days=st.frozensets(st.integers(0, 6), min_size=1),
    start=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    end=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    tz=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]),
)
moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(window=windows, now=moments)
def test_next_open_is_open_and_nothing_earlier_is(window: RampWindow, now: datetime) -> None:
    # Given any window and moment, When asked for the next opening
    nxt = window.next_open(now)
    # Then it is not before now, the window is open then, and within a week
    assert now <= nxt <= now + timedelta(days=8)
    assert window.is_open(nxt)
    # and it was closed a moment before, unless that opening is now itself
    if nxt > now:
        assert not window.is_open(max(now, nxt - timedelta(minutes=1)))


# --- the controller: stages advance only inside a window; harm rolls back at any time ---------------

from dataclasses import replace  # noqa: E402

from rollout.core.controller import Observation, Status, next_step  # noqa: E402
from tests.core.test_controller import HARM, PASS, PLAN, T0, state  # noqa: E402

SATURDAY_CLOSED = replace(PLAN, windows=(OFFICE,))           # T0 is Saturday 2026-11-28 12:00 UTC
SATURDAY_OPEN = replace(PLAN, windows=(OFFICE, RampWindow(parse_days("sat"), time(12), time(13), "UTC")))


@pytest.mark.parametrize(("name", "plan", "observation", "status", "stage", "action"), [
    ("a passed stage waits outside every window", SATURDAY_CLOSED, Observation(PASS, 5_000), Status.SHADOW, 0, "continue"),
    ("a passed stage advances inside a window", SATURDAY_OPEN, Observation(PASS, 5_000), Status.RAMPING, 1, "enter_stage"),
    ("proven harm rolls back outside every window", SATURDAY_CLOSED, Observation(HARM, 5_000), Status.ROLLED_BACK, 0,
     "rollback"),
])
def test_the_controller_obeys_ramp_windows(name: str, plan, observation, status, stage, action) -> None:  # type: ignore[no-untyped-def]
    # Given a shadow stage that has run long enough, When a check sees the observation
    step = next_step(plan, state(Status.SHADOW, 0, started=timedelta(hours=1)), observation, [], T0)
    # Then it advances, waits or rolls back as the window and the evidence say
    assert (step.state.status, step.state.stage_index, step.action) == (status, stage, action), name
    if name.startswith("a passed stage waits"):
        assert step.effects == () and "ramp window" in step.reason and "Mon 2026-11-30 08:00" in step.reason
