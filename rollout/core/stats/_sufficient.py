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


@dataclass(frozen=True)
class UnitSums:
    """Per-unit sums of one series (a metric's values, their logs, or a 0/1 exceedance) in one
    (metric, variant, stratum), across that stratum's stages: what a cluster-robust variance needs.

    Randomisation is per unit, so a unit's outcomes are not independent draws: for
    unit u in stage g let Y_ug be the sum of its values and n_ug how many it has.
    The ratio mean of stage g is r_g = sum_u Y_ug / sum_u n_ug, and (delta method)

        Cov(r_g, r_h) ~= K/(K-1) * sum_u e_ug e_uh / (N_g N_h),   e_ug = Y_ug - r_g n_ug,

    which expands into the three cross sums below, so SQL can sum them over units
    and the judge never sees a unit. Off-diagonal (g != h) entries carry the
    correlation of stage cells: a unit keeps its arm across stages.

    stages: the stage of each row/column, sorted.
    units: K_g, units with at least one value in stage g; `units_total`: distinct over all stages.
    n, y: N_g = sum_u n_ug and sum_u Y_ug.
    yy, yn, nn: S x S matrices sum_u Y_ug Y_uh, sum_u Y_ug n_uh, sum_u n_ug n_uh.
    """

    stages: tuple[int, ...]
    units: tuple[int, ...]
    units_total: int
    n: tuple[float, ...]
    y: tuple[float, ...]
    yy: tuple[tuple[float, ...], ...]
    yn: tuple[tuple[float, ...], ...]
    nn: tuple[tuple[float, ...], ...]

    @classmethod
    def from_units(cls, per_unit: Mapping[object, Mapping[int, tuple[float, float]]]) -> UnitSums:
        """From {unit: {stage: (Y_ug, n_ug)}}: the brute-force definition (tests, the bench's twin of the SQL)."""
        stages = tuple(sorted({g for cells in per_unit.values() for g in cells}))
        idx = {g: i for i, g in enumerate(stages)}
        s = len(stages)
        units = [0] * s
        n = [0.0] * s
        y = [0.0] * s
        yy = [[0.0] * s for _ in range(s)]
        yn = [[0.0] * s for _ in range(s)]
        nn = [[0.0] * s for _ in range(s)]
        for cells in per_unit.values():
            vec_y = [0.0] * s
            vec_n = [0.0] * s
            for g, (yu, nu) in cells.items():
                vec_y[idx[g]] += yu
                vec_n[idx[g]] += nu
            for i in range(s):
                if vec_n[i] > 0:
                    units[i] += 1
                n[i] += vec_n[i]
                y[i] += vec_y[i]
                for j in range(s):
                    yy[i][j] += vec_y[i] * vec_y[j]
                    yn[i][j] += vec_y[i] * vec_n[j]
                    nn[i][j] += vec_n[i] * vec_n[j]
        return cls(stages, tuple(units), len(per_unit), tuple(n), tuple(y),
                   tuple(map(tuple, yy)), tuple(map(tuple, yn)), tuple(map(tuple, nn)))  # fmt: skip

    def covariance(self, stages: Iterable[int]) -> tuple[list[float], list[list[float]]]:
        """(ratio means r_g, cluster-robust covariance of them) for the given stages, in that order.

        Stages this series has no data for get r = nan and zero covariance. The
        small-sample factor K/(K-1) (CR1) counts the stratum's distinct units.
        """
        idx = {g: i for i, g in enumerate(self.stages)}
        want = [idx.get(g) for g in stages]
        k = self.units_total
        factor = k / (k - 1) if k > 1 else math.nan
        r = [self.y[i] / self.n[i] if i is not None and self.n[i] > 0 else math.nan for i in want]
        cov = [[0.0] * len(want) for _ in want]
        for a, i in enumerate(want):
            for b, j in enumerate(want):
                if i is None or j is None or not (self.n[i] > 0 and self.n[j] > 0):
                    continue
                e = self.yy[i][j] - r[b] * self.yn[i][j] - r[a] * self.yn[j][i] + r[a] * r[b] * self.nn[i][j]
                cov[a][b] = factor * e / (self.n[i] * self.n[j])
            if i is not None and cov[a][a] < 0:
                cov[a][a] = 0.0  # rounding of a near-zero sum of squares
        return r, cov

