"""Typed results of the judge: per metric, per stratum, per health check, and overall."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Decision(StrEnum):
    """Overall verdict of one check; the worst of its parts wins (see `severity`)."""

    PASS = "pass"  # every metric proven within its margin, data healthy
    CONTINUE = "continue"  # nothing proven yet either way: keep collecting
    HOLD = "hold"  # the data cannot be trusted (yet): do not advance
    ROLLBACK = "rollback"  # harm beyond a margin proven

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Decision.PASS: 0, Decision.CONTINUE: 1, Decision.HOLD: 2, Decision.ROLLBACK: 3}


class MetricVerdict(StrEnum):
    HARM = "harm"
    NON_INFERIOR = "non_inferior"
    INCONCLUSIVE = "inconclusive"
    UNHEALTHY = "unhealthy"


class Code(StrEnum):
    """Why a result is what it is; stable strings for the decisions table and alerts."""

    OK = "ok"
    NO_DATA = "no_data"
    MISSING_IN_ARM = "missing_in_arm"
    TOO_LITTLE_DATA = "too_little_data"
    ZERO_VARIANCE = "zero_variance"
    NONPOSITIVE_BASELINE = "nonpositive_baseline"  # relative difference against a baseline mean <= 0
    NONPOSITIVE_VALUES = "nonpositive_values"  # log scale or quantile, but no positive values in an arm
    SAMPLE_RATIO_MISMATCH = "sample_ratio_mismatch"
    NO_ALLOCATION = "no_allocation"
    NOT_PAIRABLE = "not_pairable"  # the metric has no paired form (a quantile): judge it on a ramp stage
    OUTCOME_LOSS = "outcome_loss"  # the candidate's exposures produce proven fewer outcomes than the baseline's
    COMPLETION_UNPROVEN = "completion_unproven"  # a loss above the tolerance not yet excluded: no pass
    NO_EXPOSURES = "no_exposures"  # the SDK recorded no exposures: completion is not checked


@dataclass(frozen=True)
class MetricResult:
    """One metric compared over one scope (all strata pooled when `stratum` is None).

    estimate/lower/upper are on the comparison's scale, oriented so that positive
    means "candidate worse": absolute difference, relative difference, relative
    change of the geometric mean (log scale), or, for a quantile, the difference
    in the share of outcomes above the baseline's quantile. `lower` is at the harm
    test's level (`alpha`, after the multiple-testing correction), `upper` at the
    non-inferiority level. Bounds are nan when the data gave none.
    """

    metric: str
    stratum: str | None
    verdict: MetricVerdict
    code: Code
    estimate: float
    lower: float
    upper: float
    margin: float
    n_baseline: int
    n_candidate: int
    baseline_value: float
    candidate_value: float
    p_value: float
    e_value: float
    alpha: float
    reason: str


@dataclass(frozen=True)
class HealthCheck:
    name: str  # "sample_ratio", "enough_data", "metrics_present", "completion"
    ok: bool
    code: Code
    reason: str
    e_value: float = float("nan")


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str
    metrics: tuple[MetricResult, ...]
    strata: tuple[MetricResult, ...]
    health: tuple[HealthCheck, ...]

    def metric(self, name: str) -> MetricResult:
        return next(r for r in self.metrics if r.metric == name)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (NaN and infinity become None), for the decisions table and artifacts."""
        return _clean(asdict(self))


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
