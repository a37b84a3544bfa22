"""A rollout plan as the pure core sees it: frozen, validated, with allocations resolved.

The YAML a release manager writes is parsed and checked by the pydantic model
in `rollout.app.plans`; it hands the controller this form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType

from rollout.core.flag import BUCKETS, Stratum
from rollout.core.online_eval import OnlineEval
from rollout.core.stats import CompletionSpec, MetricSpec
from rollout.core.stats import MetricSpec
from rollout.core.windows import RampWindow


DEFAULT_STALL = timedelta(hours=1)
"""A stage with neither stall_after nor max_duration is held after this long without any evidence."""


class StageKind(StrEnum):
    EVAL = "eval"      # offline: both variants run on a case file before any user is involved
    SHADOW = "shadow"  # everyone served the baseline; a sample also runs the candidate
    RAMP = "ramp"      # the candidate for a share of each stratum
    FULL = "full"      # the candidate for everyone: the end of the plan


class Policy(StrEnum):
    HOLD = "hold"          # stop advancing and wait for a human
    ROLLBACK = "rollback"  # put everyone back on the baseline


@dataclass(frozen=True, slots=True)
class EvalSpec:
    """What an eval gate runs: a JSONL case file, the two callables and a scorer, by import path."""

    cases: str
    baseline: str
    candidate: str
    scorer: str
    margin: float = 0.05          # tolerated drop in pass rate (absolute)
    min_cases: int = 10           # a category with fewer cases is reported but does not gate
    concurrency: int = 8
    rate_limit: float | None = None  # calls per second, both variants together
    timeout: float = 30.0         # seconds per call


@dataclass(frozen=True, slots=True)
class ShadowBudget:
    """Spend on candidate calls while shadowing; reaching either limit pauses shadowing."""

    per_hour: float | None = None
    total: float | None = None
    cost_metric: str = "cost_usd"


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    kind: StageKind
    allocations: Mapping[str, int] = field(default_factory=dict)  # stratum -> basis points
    shadow_bp: int = 0
    min_samples: int = 0
    min_duration: timedelta = timedelta(0)
    max_duration: timedelta | None = None
    approval: bool = False
    eval: EvalSpec | None = None
    budget: ShadowBudget | None = None
    rate_limit: float | None = None  # shadow: candidate calls per second per app process
    # Without any evidence for this long, the stage is held with the reason (None: max_duration, else 1 h).
    stall_after: timedelta | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "allocations", MappingProxyType(dict(self.allocations)))

    @property
    def stall_limit(self) -> timedelta:
        """How long the stage may go without any evidence before it is held: it never waits silently."""
        return self.stall_after or self.max_duration or DEFAULT_STALL

    @property
    def live(self) -> bool:
        """Whether users are served the candidate in this stage (ramp or full), as opposed to eval or shadow."""
        return self.kind in (StageKind.RAMP, StageKind.FULL)


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    flag: str
    baseline: str
    candidate: str
    strata: tuple[Stratum, ...]
    stages: tuple[Stage, ...]
    metrics: tuple[MetricSpec, ...]
    check_interval: timedelta = timedelta(seconds=30)
    alpha: float = 0.05
    on_inconclusive: Policy = Policy.HOLD
    on_approval_timeout: Policy = Policy.HOLD
    approval_timeout: timedelta = timedelta(hours=24)
    on_abort: Policy = Policy.ROLLBACK
    online_evals: tuple[OnlineEval, ...] = ()   # judges that grade a sample of live answers in every stage
    restart_allowed: bool = False   # may a retried run whose rollout ended start another one?
    # Exposures without outcomes: a proven loss holds (or rolls back); PASS needs a loss above tolerance excluded.
    completion: CompletionSpec = CompletionSpec()
    windows: tuple[RampWindow, ...] = ()  # stages advance only inside one of these; none: at any time

    @property
    def stratum_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.strata) + ("default",)

    def allocations_before(self, index: int) -> dict[str, int]:
        """What the flag serves while stage `index` waits for approval: the last live stage's allocations."""
        for stage in reversed(self.stages[:index]):
            if stage.live:
                return dict(stage.allocations)
        return {name: 0 for name in self.stratum_names}


FULL_ALLOCATION = BUCKETS
