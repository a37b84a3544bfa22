"""Sufficient statistics per arm: everything the judge needs, mergeable with `+`.

The store computes these with SQL GROUP BY (see `rollout.store.evidence`), so a
check over millions of outcomes never ships raw rows into Python.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

BINS_PER_LN = 20
"""Histogram resolution: bin = floor(ln(value) * 20), so each bin is ~5 % wide.

Fixed (not adaptive) so histograms from different SQL groups, stages and days
add bin by bin, and so SQL can compute the bin with `floor(ln(value) * 20)`.
"""


def histogram_bin(value: float) -> int:
    """The log-spaced bin of a positive value (same formula as the SQL side)."""
    return math.floor(math.log(value) * BINS_PER_LN)


def bin_lower_edge(bin_index: int) -> float:
    return math.exp(bin_index / BINS_PER_LN)


@dataclass(frozen=True)
class LogHistogram:
    """Counts of positive values per log-spaced bin, sparse and sorted by bin."""

    counts: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        # Cumulative counts once, so quantiles and tail counts are a bisect, not a scan.
        bins, running, cumulative = [], 0, []
        for b, c in self.counts:
            running += c
            bins.append(b)
            cumulative.append(running)
        object.__setattr__(self, "_bins", bins)
        object.__setattr__(self, "_cumulative", cumulative)

    @classmethod
    def from_mapping(cls, counts: Mapping[int, int]) -> LogHistogram:
        return cls(tuple(sorted((int(b), int(c)) for b, c in counts.items() if c)))

    @classmethod
    def from_values(cls, values: Iterable[float]) -> LogHistogram:
        acc: dict[int, int] = {}
        for v in values:
            if v > 0 and math.isfinite(v):
                b = histogram_bin(v)
                acc[b] = acc.get(b, 0) + 1
        return cls.from_mapping(acc)

    def __add__(self, other: LogHistogram) -> LogHistogram:
        acc = dict(self.counts)
        for b, c in other.counts:
            acc[b] = acc.get(b, 0) + c
        return LogHistogram.from_mapping(acc)

    @property
    def total(self) -> int:
        return self._cumulative[-1] if self._cumulative else 0

    def quantile_bin(self, q: float) -> int | None:
        """The bin holding the q-quantile (first bin whose cumulative share reaches q)."""
        total = self.total
        if total == 0:
            return None
        i = bisect.bisect_left(self._cumulative, q * total)
        return self._bins[min(i, len(self._bins) - 1)]

    def quantile(self, q: float) -> float | None:
        """The q-quantile, as the geometric middle of its bin (within ~2.5 %)."""
        b = self.quantile_bin(q)
        return None if b is None else math.exp((b + 0.5) / BINS_PER_LN)

    def count_at_or_above(self, bin_index: int) -> int:
        i = bisect.bisect_left(self._bins, bin_index)
        return self.total - (self._cumulative[i - 1] if i > 0 else 0)


@dataclass(frozen=True)
class ArmStats:
    """Sufficient statistics of one metric in one arm of one (stratum, stage) cell.

    `log_*` are over ln(value) for the positive values only (`log_n` of them), so
    heavy-tailed metrics (latency, cost) can be compared on the log scale where
    their sample means behave.
    """

    n: int = 0
    sum: float = 0.0
    sum_sq: float = 0.0
    log_n: int = 0
    log_sum: float = 0.0
    log_sum_sq: float = 0.0
    histogram: LogHistogram = field(default_factory=LogHistogram)

    @classmethod
    def from_values(cls, values: Iterable[float]) -> ArmStats:
        vals = [float(v) for v in values]
        logs = [math.log(v) for v in vals if v > 0]
        return cls(
            n=len(vals),
            sum=math.fsum(vals),
            sum_sq=math.fsum(v * v for v in vals),
            log_n=len(logs),
            log_sum=math.fsum(logs),
            log_sum_sq=math.fsum(x * x for x in logs),
            histogram=LogHistogram.from_values(vals),
        )

    def __add__(self, other: ArmStats) -> ArmStats:
        return ArmStats(
            n=self.n + other.n,
            sum=self.sum + other.sum,
            sum_sq=self.sum_sq + other.sum_sq,
            log_n=self.log_n + other.log_n,
            log_sum=self.log_sum + other.log_sum,
            log_sum_sq=self.log_sum_sq + other.log_sum_sq,
            histogram=self.histogram + other.histogram,
        )

    def moments(self, scale: str = "linear") -> tuple[int, float, float]:
        """(n, mean, unbiased variance) on the given scale; mean/variance are nan when undefined."""
        if scale == "log":
            n, s, ss = self.log_n, self.log_sum, self.log_sum_sq
        else:
            n, s, ss = self.n, self.sum, self.sum_sq
        if n == 0:
            return 0, math.nan, math.nan
        mean = s / n
        if n < 2:
            return n, mean, math.nan
        # max(0, ...) because sum_sq - sum^2/n can dip below zero by rounding.
        return n, mean, max(0.0, (ss - s * s / n) / (n - 1))

    @property
    def mean(self) -> float:
        return self.moments()[1]

    @property
    def variance(self) -> float:
        return self.moments()[2]


def merge(stats: Iterable[ArmStats]) -> ArmStats:
    total = ArmStats()
    for s in stats:
        total = total + s
    return total
