"""Ramp windows: the hours in which a rollout may advance a stage (pure: zoneinfo, no clock).

A plan may name windows such as ``{days: mon-thu, from: "09:00", to: "16:00", tz: Europe/Berlin}``.
Outside every window a stage that has passed waits; proven harm rolls back at any hour (the
controller checks harm before it ever asks a window). A plan with no windows may advance at any time.

A window opens on each of its days at `start`, local time in `tz`, and closes at `end` the same
day, or the next day when `end` is not after `start` (``22:00`` to ``06:00`` crosses midnight;
equal times mean a whole day). Local times that a daylight-saving change skips or repeats are read
the way `zoneinfo` reads them (fold 0), the same way for opening and for testing, so `next_open`
always returns an instant at which `is_open` is true.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class RampWindow:
    days: frozenset[int]  # weekdays the window opens on, 0 = Monday
    start: time
    end: time
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if not self.days or not self.days <= set(range(7)):
            raise ValueError("a window needs one or more weekdays (0 = Monday ... 6 = Sunday)")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{self.tz!r} is not a known time zone, e.g. Europe/Berlin or UTC") from None

    def _intervals(self, now: datetime) -> Iterable[tuple[datetime, datetime]]:
        """[open, close) instants of this window around `now`: from the day before to a week after."""
        zone = ZoneInfo(self.tz)
        today = _aware(now).astimezone(zone).date()
        for offset in range(-1, 9):
            day = today + timedelta(days=offset)
            if day.weekday() in self.days:
                close_day = day if self.end > self.start else day + timedelta(days=1)
                # In UTC: aware datetimes sharing one zone compare by wall time, which a DST change makes wrong.
                opens = datetime.combine(day, self.start, zone).astimezone(UTC)
                closes = datetime.combine(close_day, self.end, zone).astimezone(UTC)
                if closes > opens:  # a window lying wholly in a skipped hour never opens that day
                    yield opens, closes

    def is_open(self, now: datetime) -> bool:
        return any(opens <= now < closes for opens, closes in self._intervals(now))

    def next_open(self, now: datetime) -> datetime:
        """`now` itself while the window is open, else the instant it next opens."""
        if self.is_open(now):
            return now
        return min(opens for opens, _ in self._intervals(now) if opens > now)

    def describe(self) -> str:
        return f"{format_days(self.days)} {self.start:%H:%M}-{self.end:%H:%M} {self.tz}"


def is_open(windows: Sequence[RampWindow], now: datetime) -> bool:
    """Whether a stage may advance now: inside any window, or always when there are none."""
    return not windows or any(w.is_open(now) for w in windows)


def next_open(windows: Sequence[RampWindow], now: datetime) -> datetime:
    """The first instant at or after `now` when a stage may advance."""
    return now if not windows else min(w.next_open(now) for w in windows)


def describe_window(plan: Any, now: datetime) -> str:
    """One line for `rollout status` and the run's summary: is a ramp window open, and if not, when next.

    Takes anything with a `windows` sequence (the core's RolloutPlan).
    """
    windows: Sequence[RampWindow] = getattr(plan, "windows", ())
    if not windows:
        return "ramp windows: none, stages may advance at any time"
    names = "; ".join(w.describe() for w in windows)
    if is_open(windows, now):
        return f"ramp window open now ({names})"
    at = next_open(windows, now)
    return f"ramp window closed: stages advance from {at.astimezone(UTC):%a %Y-%m-%d %H:%M} UTC ({names})"


def parse_days(text: str) -> frozenset[int]:
    """`mon-thu`, `mon,wed,fri`, `fri-mon` (wraps), `sat-sun,wed`, or `daily`."""
    spec = text.strip().lower()
    if spec in ("daily", "all", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in spec.split(","):
        first, sep, last = part.strip().partition("-")
        a, b = _day(first), _day(last) if sep else _day(first)
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def format_days(days: frozenset[int]) -> str:
    if len(days) == 7:
        return "daily"
    ordered = sorted(days)
    runs: list[list[int]] = []
    for d in ordered:
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return ",".join(DAY_NAMES[r[0]] if len(r) == 1 else f"{DAY_NAMES[r[0]]}-{DAY_NAMES[r[-1]]}" for r in runs)


def _day(name: str) -> int:
    key = name.strip()[:3]
    if key not in DAY_NAMES:
        raise ValueError(f"{name.strip()!r} is not a weekday; write mon, tue, wed, thu, fri, sat or sun")
    return DAY_NAMES.index(key)


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("a window needs an aware datetime (with a time zone)")
    return now


__all__ = ["RampWindow", "is_open", "next_open", "describe_window", "parse_days", "format_days"]
