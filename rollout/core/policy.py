"""The rules the rest of the code only applies: constants, name rules, the judge's sizing, the lease.

One definition of each, here in the pure core, so that changing a rule is one
edit (the judge's sizing in particular: `judge_sizing` is the only place that
turns a stage into the judge's sample targets).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for the annotations: plan imports flag, which imports this module
    from rollout.core.plan import RolloutPlan, Stage

BUCKETS = 10_000
"""Basis points: a unit's bucket is in [0, BUCKETS) and allocations are whole numbers of 0.01 %."""

METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
"""What a metric (or scorer, or cost metric) may be called: an identifier of at most 64 characters."""

COMPLETION = "completion"
"""What the approval after the last stage is called (a plan may ask for one before it ends)."""


# --- the judge's sizing ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class JudgeSizing:
    min_samples: int       # per arm, before the judge may pass anything
    planned_samples: int   # per arm, what the confidence sequence is tuned for


def judge_sizing(stage: Stage) -> JudgeSizing:
    """How many samples the judge waits for, and plans its bounds for, in this stage.

    A shadow stage compares pairs (far tighter), so it plans for fewer.
    """
    # StageKind is a StrEnum; comparing by value keeps plan (which imports flag, which imports
    # this module) out of this module's imports.
    planned_floor = 500 if stage.kind == "shadow" else 1_000
    return JudgeSizing(min_samples=max(20, min(stage.min_samples, 100)),
                       planned_samples=max(stage.min_samples, planned_floor))


# --- reading a stored plan document -----------------------------------------------------

def shadow_rate(document: Mapping[str, Any] | None, stage_index: int) -> float | None:
    """The rate limit on candidate calls that stage `stage_index` of a stored plan document sets, if any.

    The store reads flags without parsing whole plans (it runs on every snapshot
    refresh), so this reads the one field from the document the plan was stored as.
    """
    if not isinstance(document, Mapping):
        return None
    stages = document.get("stages") or []
    if not isinstance(stages, list) or not 0 <= stage_index < len(stages) or not isinstance(stages[stage_index], dict):
        return None
    rate = stages[stage_index].get("rate_limit")
    return float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0 else None


def online_sample(document: Mapping[str, Any] | None) -> float | None:
    """The share of exposures whose input and answer the SDK keeps for a stored plan's online judges, if any.

    One share for all judges, the largest: sampling is by unit hash against a
    threshold, so a larger share holds every unit a smaller one would, and each
    judge grades what is kept. Read from the stored document like `shadow_rate`.
    """
    if not isinstance(document, Mapping):
        return None
    judges = document.get("online_evals") or []
    if not isinstance(judges, list):
        return None
    shares = [float(j["sample"]) for j in judges
              if isinstance(j, Mapping) and isinstance(j.get("sample"), (int, float))
              and not isinstance(j.get("sample"), bool) and 0 < j["sample"] <= 1]
    return max(shares, default=None)


def stage_name(plan: RolloutPlan, index: int | None) -> str | None:
    """A stage's name; the approval after the last stage is COMPLETION; None before the first."""
    if index is None or index < 0:
        return None
    return plan.stages[index].name if index < len(plan.stages) else COMPLETION


def stage_number(index: int) -> int:
    """Stages as people count them: 1-based everywhere (status, history, artifacts); 0 before the first."""
    return max(index, -1) + 1


# --- the lease ---------------------------------------------------------------------------

LEASE_FLOOR = timedelta(seconds=5)
LEASE_INTERVALS = 3      # missed checks before a controller counts as lost
LEASE_SLOWEST = 4        # times the slowest recent check, on top


def lease_for(check_interval: timedelta, recent_check_seconds: Iterable[float] = ()) -> timedelta:
    """How long a controller's lease lasts after each renewal.

    Between two renewals a controller sleeps one interval and runs (parts of) two
    checks, and on a loaded machine a check can take far longer than the interval
    (3-36 s measured on 2 shared cores). So the lease is three intervals plus four
    times the slowest recent check, and at least LEASE_FLOOR: a slow but alive
    controller is never shown lost, and a dead one is noticed after a few checks.
    """
    slowest = max(recent_check_seconds, default=0.0)
    return max(LEASE_FLOOR, LEASE_INTERVALS * check_interval + timedelta(seconds=LEASE_SLOWEST * slowest))


__all__ = ["BUCKETS", "COMPLETION", "LEASE_FLOOR", "METRIC_NAME", "JudgeSizing", "judge_sizing", "lease_for",
           "online_sample", "shadow_rate", "stage_name", "stage_number"]
