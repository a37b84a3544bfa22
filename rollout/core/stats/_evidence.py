"""Evidence: the judge's whole input, as sufficient statistics keyed by cell."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from rollout.core.stats._sufficient import ArmStats, UnitSums

ArmKey = tuple[str, str, str, int]
"""(metric, variant, stratum, stage)"""
UnitKey = tuple[str, str, int]
"""(variant, stratum, stage)"""
CellKey = tuple[str, int]
"""(stratum, stage)"""
ClusterKey = tuple[str, str, str, str]
"""(metric, variant, stratum, series): series is "linear", "log" or "exceed:<bin>" (values in bins >= bin)"""
CompletionKey = tuple[str, str]
"""(variant, stratum)"""

from rollout.core.policy import BUCKETS as BASIS_POINTS  # noqa: E402 - one definition, in the policy


@dataclass(frozen=True)
class Evidence:
    """Outcomes of one rollout so far, reduced to what the judge needs.

    arms: per (metric, variant, stratum, stage) the arm's sufficient statistics.
    units: per (variant, stratum, stage) how many units were assigned (for SRM).
    allocation_bp: per (stratum, stage) the candidate's share in force, in basis
      points of 10,000. A cell without an allocation is left out of the SRM test.
    baseline, candidate: the two variant keys to compare.
    clusters: per (metric, variant, stratum, series) the per-unit sums across
      stages (`UnitSums`), so variances follow the randomisation unit. A metric
      without them is judged as if every outcome were its own unit (the old,
      row-level behaviour, right only when units never repeat).
    completion: per (variant, stratum) per-unit sums of outcomes (y) against
      exposures (n), from the exposures table; empty when the SDK records none.
    exposed: whether `units` counts exposed units (the exposures table) rather
      than units that reported an outcome.
    """

    arms: Mapping[ArmKey, ArmStats]
    baseline: str = "baseline"
    candidate: str = "candidate"
    units: Mapping[UnitKey, int] = field(default_factory=dict)
    allocation_bp: Mapping[CellKey, int] = field(default_factory=dict)
    clusters: Mapping[ClusterKey, UnitSums] = field(default_factory=dict)
    completion: Mapping[CompletionKey, UnitSums] = field(default_factory=dict)
    exposed: bool = False

    def __post_init__(self) -> None:
        # Read-only views, so a frozen Evidence really cannot change under the judge.
        object.__setattr__(self, "arms", MappingProxyType(dict(self.arms)))
        object.__setattr__(self, "units", MappingProxyType(dict(self.units)))
        object.__setattr__(self, "allocation_bp", MappingProxyType(dict(self.allocation_bp)))
        object.__setattr__(self, "clusters", MappingProxyType(dict(self.clusters)))
        object.__setattr__(self, "completion", MappingProxyType(dict(self.completion)))
        if self.baseline == self.candidate:
            raise ValueError("baseline and candidate must be different variants")
        # Index once: the judge asks for each metric's cells several times per check.
        cells: dict[str, set[CellKey]] = {}
        for m, v, s, g in self.arms:
            if v in (self.baseline, self.candidate):
                cells.setdefault(m, set()).add((s, g))
        object.__setattr__(self, "_cells", {m: sorted(c) for m, c in cells.items()})
        object.__setattr__(self, "_strata", sorted({s for (_, _, s, _) in self.arms}))

    def __reduce__(self):
        # Read-only mapping views do not pickle; rebuild from plain dicts (Prefect pickles task results).
        return (Evidence, (dict(self.arms), self.baseline, self.candidate, dict(self.units), dict(self.allocation_bp),
                           dict(self.clusters), dict(self.completion), self.exposed))

    def __add__(self, other: Evidence) -> Evidence:
        """Merge evidence from two sources (e.g. two time windows); allocations of `other` win.

        Per-unit sums cannot be added when a unit appears in both (its cross
        products would be lost), so the merge keeps none: the merged evidence is
        judged at row level. Aggregate the whole window in SQL instead.
        """
        if (self.baseline, self.candidate) != (other.baseline, other.candidate):
            raise ValueError("cannot merge evidence about different variants")
        arms = dict(self.arms)
        for key, stats in other.arms.items():
            arms[key] = arms[key] + stats if key in arms else stats
        units = dict(self.units)
        for key, count in other.units.items():
            units[key] = units.get(key, 0) + count
        return Evidence(arms, self.baseline, self.candidate, units, {**self.allocation_bp, **other.allocation_bp})

    def cells(self, metric: str) -> list[CellKey]:
        """The (stratum, stage) cells where either arm has this metric, in a stable order."""
        return list(self._cells.get(metric, ()))

    def arm(self, metric: str, variant: str, stratum: str, stage: int) -> ArmStats:
        return self.arms.get((metric, variant, stratum, stage), _EMPTY)

    @property
    def strata(self) -> list[str]:
        return list(self._strata)


_EMPTY = ArmStats()
