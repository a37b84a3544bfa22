"""Online judges: score a sample of live answers during every stage, within a budget.

A plan attaches judges to a rollout (`online_evals:` in the YAML). Each names
the metric its grades are recorded as (judged like any other metric: proven
harm rolls back), a scorer by import path, the share of exposures whose input
and answer are kept for it, and what grading may cost. Everything here is
pure: which units are sampled, and whether the budget allows another round.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollout.core.flag import BUCKETS


def kept_for_judges(unit_hash: int, share: float) -> bool:
    """Whether a unit's answers are in a sample of `share` of units: the one rule, for the SDK and the plan."""
    return unit_hash % BUCKETS < round(share * BUCKETS)


@dataclass(frozen=True, slots=True)
class OnlineEval:
    name: str                         # the metric the grades are recorded as
    scorer: str                       # "module:callable": a Scorer, a callable (input, output) -> float, or an LlmJudge
    sample: float                     # share of exposures (both arms alike) whose input and answer are kept
    per_hour: float | None = None     # budget for the judge's own cost, per rolling hour
    total: float | None = None        # and over the whole rollout

    def __post_init__(self) -> None:
        if not 0.0 < self.sample <= 1.0:
            raise ValueError(f"online eval {self.name!r}: sample must be in (0, 1], got {self.sample!r}")

    def samples(self, unit_hash: int) -> bool:
        """Whether this unit's answers are kept for grading.

        By the stored (keyed) unit hash, not the assignment bucket: the bucket
        decides the arm, so sampling by it would keep only one arm's answers.
        The same units are sampled in both arms and in every stage.
        """
        return kept_for_judges(unit_hash, self.sample)

    def exhausted(self, spent_hour: float, spent_total: float, cost_per_grade: float | None = None) -> str | None:
        """Why the budget allows no more grading now, or None.

        Spent means: reached, or too little left to pay for one more grade at the cost seen so far.
        """
        next_grade = cost_per_grade or 0.0

        def over(limit: float | None, spent: float) -> bool:
            return limit is not None and (spent >= limit or spent + next_grade > limit)

        if over(self.total, spent_total):
            return f"judge {self.name}: budget of ${self.total:g} for the rollout is spent (${spent_total:.4f})"
        if over(self.per_hour, spent_hour):
            return f"judge {self.name}: hourly budget of ${self.per_hour:g} is spent (${spent_hour:.4f} in the last hour)"
        return None

    def affordable(self, spent_hour: float, spent_total: float, cost_per_grade: float | None) -> int | None:
        """How many grades fit in what is left of the budget (None: no limit, or no cost seen yet)."""
        if not cost_per_grade or cost_per_grade <= 0:
            return None
        left = [limit - spent for limit, spent in ((self.per_hour, spent_hour), (self.total, spent_total))
                if limit is not None]
        if not left:
            return None
        return max(0, int(min(left) / cost_per_grade))


__all__ = ["OnlineEval", "kept_for_judges"]
