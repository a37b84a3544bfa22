"""Outcome validation: refuse bad input at the door, before anything is buffered."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any

from rollout.errors import InvalidOutcomeError

MAX_METRICS = 64
from rollout.core.policy import METRIC_NAME  # noqa: E402 - one name rule, in the policy
# Metrics that measure time or money cannot be negative; a negative value is a
# bug in the caller (a clock going backwards, a refund booked as cost), and one
# such value would drag a mean far enough to fake or hide a regression.
NON_NEGATIVE = re.compile(r"(^|_)(latency|duration|elapsed|cost|price|spend|tokens)(_|$)|_(ms|us|ns|s|sec|seconds|usd|eur|cents)$")


_NAMES: dict[str, bool] = {}
"""Metric names seen before, and whether each must be non-negative: names repeat, so check each once."""


def validate_metrics(metrics: Any) -> tuple[tuple[str, float], ...]:
    """(name, value) pairs, or InvalidOutcomeError naming every problem."""
    if type(metrics) is not dict and not isinstance(metrics, Mapping):
        raise InvalidOutcomeError(f"metrics must be a mapping of name to number, got {type(metrics).__name__}")
    if not metrics:
        raise InvalidOutcomeError("an outcome needs at least one metric")
    if len(metrics) > MAX_METRICS:
        raise InvalidOutcomeError(f"an outcome may carry at most {MAX_METRICS} metrics, got {len(metrics)}")
    out: list[tuple[str, float]] = []
    for name, value in metrics.items():
        non_negative = _NAMES.get(name) if type(name) is str else None
        vtype = type(value)
        # The common case (a known name, a plain float or int) costs two dict
        # lookups and a comparison; anything else takes the careful path.
        if non_negative is None or not (vtype is float or vtype is int or vtype is bool):
            return _validate_slowly(metrics)
        if vtype is bool:
            value = 1.0 if value else 0.0
        elif vtype is int:
            if not -_MAX_INT < value < _MAX_INT:
                return _validate_slowly(metrics)
            value = float(value)
        elif value != value or value in (_INF, -_INF):
            return _validate_slowly(metrics)
        if non_negative and value < 0:
            return _validate_slowly(metrics)
        out.append((name, value))
    return tuple(out)


_INF = float("inf")
_MAX_INT = 2**1023


def _validate_slowly(metrics: Mapping[Any, Any]) -> tuple[tuple[str, float], ...]:
    problems: list[str] = []
    out: list[tuple[str, float]] = []
    for name, value in metrics.items():
        if not isinstance(name, str) or not METRIC_NAME.match(name):
            problems.append(f"metric name {name!r} is not an identifier (letters, digits, _; at most 64)")
            continue
        if isinstance(value, bool):
            value = 1.0 if value else 0.0
        elif isinstance(value, numbers.Real):
            try:
                value = float(value)
            except (OverflowError, ValueError):
                problems.append(f"metric {name!r} is too large to store")
                continue
        else:
            problems.append(f"metric {name!r} must be a number, got {type(value).__name__}")
            continue
        non_negative = bool(NON_NEGATIVE.search(name))
        if not math.isfinite(value):
            problems.append(f"metric {name!r} must be finite, got {value}")
        elif value < 0 and non_negative:
            problems.append(f"metric {name!r} measures time or cost and cannot be negative, got {value}")
        else:
            if len(_NAMES) < 10_000:
                _NAMES[name] = non_negative
            out.append((name, value))
    if problems:
        raise InvalidOutcomeError("; ".join(problems))
    return tuple(out)


def validate_unit(unit_id: Any) -> str:
    if isinstance(unit_id, int) and not isinstance(unit_id, bool):
        return str(unit_id)
    if not isinstance(unit_id, str) or not unit_id:
        raise InvalidOutcomeError(f"unit_id must be a non-empty string, got {unit_id!r}")
    if len(unit_id) > 1024:
        raise InvalidOutcomeError("unit_id is longer than 1024 characters")
    return unit_id


def kept_text(text: str, *, redact: Callable[[str], str] | None, max_chars: int) -> str | None:
    """Text as it may be stored (a feedback comment, an answer): redacted by the app's hook, then capped.

    None when the hook raised or returned something other than text: what it
    failed to redact is never stored.
    """
    if redact is not None:
        try:
            text = redact(text)
        except Exception:  # noqa: BLE001
            return None
        if not isinstance(text, str):
            return None
    return text[:max_chars]
