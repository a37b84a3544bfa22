"""Paired comparisons: the candidate and the baseline answered the very same request.

In shadow mode every sampled request runs through both arms, and the eval gate
runs both on every case, so each candidate outcome has a partner from the
baseline on the same input. A per-pair difference d = candidate - baseline
cancels what the two answers share (how hard the input was, how long the
prompt): var(d) = var(b) + var(c) - 2 cov(b, c), so outputs correlated at rho
need about (1 - rho) of the pairs that two independent arms would need per arm.

Two tests live here:

- `judge_paired()`: the shadow stage's check. Sequential and anytime-valid with
  the same Gaussian mixture martingale as `judge()` (`rollout.core.stats._sequence`),
  the same two questions per metric, the same Holm correction, post-stratified
  pooling over (stratum, stage) cells, per-stratum verdicts and the same
  `Verdict` type, so the flow, the decisions table and the artifacts need no
  second code path.
- `eval_gate()`: the eval gate's one-shot test on a fixed case file: Tango's
  score test for a difference of paired proportions, per category and overall.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from rollout.core.stats._judge import (
    _check_arguments,
    _Comparison,
    _enough_data_check,
    _overall,
    _presence_check,
    _result,
    _sequential_tests,
)
from rollout.core.stats._pooling import binary_variance
from rollout.core.stats._spec import MetricSpec
from rollout.core.stats._verdict import Code, HealthCheck, MetricResult, MetricVerdict, Verdict, _clean

NAN = float("nan")

PairKey = tuple[str, str, int]
"""(metric, stratum, stage)"""


@dataclass(frozen=True)
class PairStats:
    """Sufficient statistics of the pairs of one metric in one (stratum, stage) cell.

    d = candidate - baseline per pair. `sum_b*` and `sum_bd` are there for
    relative margins (the delta method needs cov(d, b)). `log_*` are over
    ln(candidate) - ln(baseline) for the pairs with both values positive
    (`log_n` of them). n01 counts pairs where only the candidate had the event
    (value != 0), n10 only the baseline, n11 both; n00 = n - the rest.
    baseline_only / candidate_only: outcomes with a pair id whose partner is
    missing (the pair was not completed); `repeated`: rows whose pair id occurs
    more than once in its arm (each inflates the pair count).
    """

    n: int = 0
    sum_d: float = 0.0
    sum_d_sq: float = 0.0
    sum_b: float = 0.0
    sum_b_sq: float = 0.0
    sum_bd: float = 0.0
    log_n: int = 0
    log_sum_d: float = 0.0
    log_sum_d_sq: float = 0.0
    log_sum_b: float = 0.0
    n01: int = 0
    n10: int = 0
    n11: int = 0
    baseline_only: int = 0
    candidate_only: int = 0
    repeated: int = 0

    @property
    def n00(self) -> int:
        return self.n - self.n01 - self.n10 - self.n11

    @classmethod
    def from_pairs(
        cls, baseline: Iterable[float], candidate: Iterable[float], *, baseline_only: int = 0, candidate_only: int = 0
    ) -> PairStats:
        """From matched values (same order); for tests, simulations and the eval gate, not the store."""
        b = np.asarray(list(baseline), dtype=float)
        c = np.asarray(list(candidate), dtype=float)
        if b.shape != c.shape:
            raise ValueError("baseline and candidate must have one value per pair")
        d = c - b
        pos = (b > 0) & (c > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            lb = np.log(b[pos])
            ld = np.log(c[pos]) - lb
        eb, ec = b != 0, c != 0
        return cls(
            n=int(b.size), sum_d=math.fsum(d), sum_d_sq=math.fsum(d * d), sum_b=math.fsum(b),
            sum_b_sq=math.fsum(b * b), sum_bd=math.fsum(b * d), log_n=int(pos.sum()), log_sum_d=math.fsum(ld),
            log_sum_d_sq=math.fsum(ld * ld), log_sum_b=math.fsum(lb), n01=int((~eb & ec).sum()),
            n10=int((eb & ~ec).sum()), n11=int((eb & ec).sum()), baseline_only=baseline_only,
            candidate_only=candidate_only,
        )  # fmt: skip

    def __add__(self, other: PairStats) -> PairStats:
        # Every field is a count or a sum, so merging is field by field.
        return PairStats(*(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)))


_NO_PAIRS = PairStats()


@dataclass(frozen=True)
class PairedEvidence:
    """Paired outcomes of one rollout's shadow stage so far, reduced to what `judge_paired` needs.

    pairs: per (metric, stratum, stage) the cell's `PairStats`.
    baseline, candidate: the variant keys that were compared (for reasons and audits).
    """

    pairs: Mapping[PairKey, PairStats]
    baseline: str = "baseline"
    candidate: str = "candidate"

    def __post_init__(self) -> None:
        # A read-only view, so a frozen PairedEvidence really cannot change under the judge.
        object.__setattr__(self, "pairs", MappingProxyType(dict(self.pairs)))
        if self.baseline == self.candidate:
            raise ValueError("baseline and candidate must be different variants")
        cells: dict[str, set[tuple[str, int]]] = {}
        for m, s, g in self.pairs:
            cells.setdefault(m, set()).add((s, g))
        object.__setattr__(self, "_cells", {m: sorted(c) for m, c in cells.items()})

    def __reduce__(self):
        # Mapping views do not pickle; rebuild from a plain dict (Prefect pickles task results).
        return (PairedEvidence, (dict(self.pairs), self.baseline, self.candidate))

    def __add__(self, other: PairedEvidence) -> PairedEvidence:
        if (self.baseline, self.candidate) != (other.baseline, other.candidate):
            raise ValueError("cannot merge evidence about different variants")
        pairs = dict(self.pairs)
        for key, stats in other.pairs.items():
            pairs[key] = pairs[key] + stats if key in pairs else stats
        return PairedEvidence(pairs, self.baseline, self.candidate)

    def cells(self, metric: str) -> list[tuple[str, int]]:
        return list(self._cells.get(metric, ()))

    def pair(self, metric: str, stratum: str, stage: int) -> PairStats:
        return self.pairs.get((metric, stratum, stage), _NO_PAIRS)

    @property
    def strata(self) -> list[str]:
        return sorted({s for _, s, _ in self.pairs})


# --------------------------------------------------------------------------- judge_paired


def discordant_variance(n01, n10, n):
    """Per-pair variance of d in {-1, 0, 1} for a binary metric, from the discordant counts.

    var(d) = p01 + p10 - (p01 - p10)^2. With no discordant pair yet the plug-in is 0,
    which would claim infinite precision; one pseudo-pair in each direction
    (p~ = (x + 1) / (n + 2)), as `binary_variance` does for a rate, avoids that.
    """
    n = np.asarray(n, dtype=float)
    p01 = (np.asarray(n01, dtype=float) + 1.0) / (n + 2.0)
    p10 = (np.asarray(n10, dtype=float) + 1.0) / (n + 2.0)
    return p01 + p10 - (p01 - p10) ** 2


def _cell_columns(spec: MetricSpec, stats: list[PairStats]):
    """Per cell: (pairs used, mean d, var d, mean b, var b, cov(d, b)) on the test's scale."""
    if spec.kind == "binary":
        # McNemar: only discordant pairs carry information about the difference in rates.
        n = np.array([p.n for p in stats], dtype=float)
        n01 = np.array([p.n01 for p in stats], dtype=float)
        n10 = np.array([p.n10 for p in stats], dtype=float)
        x_b = np.array([p.n10 + p.n11 for p in stats], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_d, mean_b = (n01 - n10) / n, x_b / n
            # E[b d] = -p10 (d = -1 exactly when only the baseline had the event)
            cov = -n10 / n - mean_b * mean_d
        return n, mean_d, discordant_variance(n01, n10, n), mean_b, binary_variance(x_b, n), cov
    log = spec.scale == "log"
    rows = [
        (p.log_n, p.log_sum_d, p.log_sum_d_sq, p.log_sum_b, NAN, NAN)
        if log
        else (p.n, p.sum_d, p.sum_d_sq, p.sum_b, p.sum_b_sq, p.sum_bd)
        for p in stats
    ]
    n, sd, sdd, sb, sbb, sbd = (np.array(col, dtype=float) for col in zip(*rows, strict=True))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # max(0, ...): sum of squares minus n mean^2 can dip below zero by rounding.
        var_d = np.maximum(0.0, (sdd - sd * sd / n) / (n - 1))
        var_b = np.maximum(0.0, (sbb - sb * sb / n) / (n - 1))
        cov = (sbd - sb * sd / n) / (n - 1)
        return n, sd / n, var_d, sb / n, var_b, cov


def paired_pooled_comparison(n, mean_d, var_d, mean_b, var_b, cov_bd, *, relative: bool):
    """Candidate minus baseline from paired cells, pooled over the cells (last axis).

    Returns (estimate, variance, n_eff, pooled_mean_b, pooled_mean_d). Each cell is
    weighted by its pairs, the paired form of the CMH weight n_c n_b / (n_c + n_b)
    that `pooled_comparison` uses (the same shares when both arms have n). With
    `relative`, the estimate is mean_d / mean_b (= mean_c / mean_b - 1) and its
    variance by the delta method, var(d - e b) / mean_b^2 with e the estimate: the
    paired covariance enters here, which is what makes a relative paired margin tight.
    Cells with fewer than 2 pairs get weight 0; n_eff = pairs used.
    """
    n = np.asarray(n, dtype=float)
    usable = (n >= 2) & np.isfinite(var_d)
    if relative:
        usable &= np.isfinite(var_b) & np.isfinite(cov_bd)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        w = np.where(usable, n, 0.0)
        n_eff = w.sum()
        share = w / n_eff
        md = float(np.sum(share * np.where(usable, mean_d, 0.0)))
        mb = float(np.sum(share * np.where(usable, mean_b, 0.0))) if np.any(usable) else NAN
        if relative:
            # mb <= 0 (or nan) leaves both nan: the caller reports a non-positive baseline.
            # numpy division: a tiny positive mb may square to 0, which must give inf/nan, not raise.
            estimate = float(np.divide(md, mb)) if mb > 0 else NAN
            v_cell = var_d - 2.0 * estimate * cov_bd + estimate * estimate * var_b
            variance = np.sum(np.where(usable, share * share * v_cell / np.where(usable, n, 1.0), 0.0))
            variance = float(np.divide(variance, mb * mb)) if mb > 0 else NAN
        else:
            estimate = md
            variance = float(np.sum(np.where(usable, share * share * var_d / np.where(usable, n, 1.0), 0.0)))
    if not n_eff > 0:
        return NAN, NAN, 0.0, NAN, NAN
    return estimate, variance, float(n_eff), mb, md


@dataclass(frozen=True)
class _Paired:
    """A `_Comparison` plus what only a paired comparison has to say."""

    comparison: _Comparison
    pairs: int  # pairs on the test's scale (pairs with both values positive for log scale)
    unpaired: int  # outcomes whose partner is missing
    repeated: int


def _compare_paired(spec: MetricSpec, ev: PairedEvidence, cells, min_samples: int, planned_samples: int) -> _Paired:
    stats = [ev.pair(spec.metric, s, g) for s, g in cells]
    total = sum(stats, _NO_PAIRS)
    log = spec.scale == "log"  # never binary: MetricSpec refuses that
    pairs = total.log_n if log else total.n
    n_b, n_c = total.n + total.baseline_only, total.n + total.candidate_only

    def coded(code: Code, **values) -> _Paired:
        return _Paired(_Comparison(code, n_b, n_c, **values), pairs, total.baseline_only + total.candidate_only,
                       total.repeated)  # fmt: skip

    if spec.quantile is not None:
        # Checked before the data: no amount of pairs makes a quantile paired.
        return coded(Code.NOT_PAIRABLE)
    if n_b == 0 and n_c == 0:
        return coded(Code.NO_DATA)
    if total.n == 0:
        return coded(Code.MISSING_IN_ARM)
    if log and pairs == 0:
        return coded(Code.NONPOSITIVE_VALUES)
    if pairs < min_samples:
        return coded(Code.TOO_LITTLE_DATA)

    relative = spec.relative and not log
    margin = spec.margin
    if log:  # the margin as a log-ratio of geometric means, as judge() does
        margin = math.log1p(margin) if spec.better == "lower" else -math.log1p(-min(margin, 1 - 1e-12))
    est, var, n_eff, mb, md = paired_pooled_comparison(*_cell_columns(spec, stats), relative=relative)
    if log:
        # Geometric means over the positive pairs; clamped, since degenerate sums can exceed a float's range.
        mb, mc = math.exp(min(mb, 700.0)), math.exp(min(mb + md, 700.0))
    else:
        mc = mb + md
    if relative and not mb > 0:
        return coded(Code.NONPOSITIVE_BASELINE, baseline_value=mb, candidate_value=mc)
    if not (math.isfinite(var) and var > 0 and n_eff > 0):
        return coded(Code.ZERO_VARIANCE, baseline_value=mb, candidate_value=mc)
    sign = 1.0 if spec.better == "lower" else -1.0
    return coded(
        Code.OK, estimate=sign * est, sd=math.sqrt(var), k=n_eff / planned_samples, margin=margin,
        baseline_value=mb, candidate_value=mc,
    )  # fmt: skip


def judge_paired(
    paired_evidence: PairedEvidence,
    metrics: Sequence[MetricSpec],
    *,
    alpha: float = 0.05,
    min_samples: int = 100,
    planned_samples: int = 2_000,
    correction: str = "holm",
    strata_alpha_share: float = 0.2,
    max_unpaired_share: float | None = None,
) -> Verdict:
    """Compare candidate with baseline pair by pair on every metric; never raises on data.

    Per metric and scope the estimate is the mean per-pair difference (binary:
    (n01 - n10) / n with the McNemar variance from the discordant pairs; log
    scale: the mean of ln(c) - ln(b), a relative change of the geometric mean),
    and the anytime-valid bound is the one `judge()` uses, at information
    k = pairs / planned_samples. A quantile has no paired form and is reported
    as such; the check then holds.

    alpha, correction, strata_alpha_share: as in `judge()` (false rollbacks over
      the whole stage however often this is called, Holm across metrics, a
      share of alpha for per-stratum verdicts).
    min_samples: pairs per metric below which it gets no verdict (the check holds).
    planned_samples: the pairs the stage plans for; the bound is tightest there.
    max_unpaired_share: above this share of outcomes without a partner the check
      holds, because the completed pairs may be a selected subset. None (the
      default): such outcomes are reported, never held on, since the SDK leaves
      a failed arm's latency and scores out by design and the error metric
      judges the failures. A pair id repeated within an arm always holds: that
      is broken reporting, not a failure.
    There is no sample-ratio test: both arms answer every shadowed request.
    """
    if not (max_unpaired_share is None or 0 <= max_unpaired_share <= 1):
        raise ValueError("max_unpaired_share must lie in [0, 1]")
    metrics = _check_arguments(metrics, alpha=alpha, correction=correction, strata_alpha_share=strata_alpha_share,
                              planned_samples=planned_samples, min_samples=min_samples)

    ev = paired_evidence
    strata = ev.strata
    split = len(strata) > 1 and strata_alpha_share > 0
    pooled_alpha = alpha * (1 - strata_alpha_share) if split else alpha
    stratum_alpha = alpha * strata_alpha_share / (len(strata) * max(len(metrics), 1)) if split else NAN

    scopes: list[tuple[MetricSpec, str | None, _Paired]] = [
        (m, None, _compare_paired(m, ev, ev.cells(m.metric), min_samples, planned_samples)) for m in metrics
    ]
    if split:
        for s in strata:
            for m in metrics:
                cells = [c for c in ev.cells(m.metric) if c[0] == s]
                scopes.append((m, s, _compare_paired(m, ev, cells, min_samples, planned_samples)))

    comps = [p.comparison for _, _, p in scopes]
    ok = [c.code is Code.OK for c in comps]
    n_pooled = len(metrics)
    p, log_e, levels, r_harm, r_ni = _sequential_tests(comps, n_pooled, alpha=alpha, pooled_alpha=pooled_alpha,
                                              stratum_alpha=stratum_alpha, correction=correction)

    results = []
    for i, (m, stratum, paired) in enumerate(scopes):
        if ok[i]:
            r = _result(m, stratum, paired.comparison, float(p[i]), float(log_e[i]), float(levels[i]), r_harm[i],
                        r_ni[i])  # fmt: skip
            # Same words as judge(), saying that this comparison was pair by pair.
            where = m.name + (f" in stratum {stratum}" if stratum is not None else "")
            r = dataclasses.replace(r, reason=r.reason.replace(f"{where}:", f"{where} ({paired.pairs} pairs):", 1))
        else:
            r = _unjudged(m, stratum, paired, float(levels[i]), min_samples)
        results.append(r)
    metric_results = tuple(results[:n_pooled])
    health = (
        _enough_data_check(metric_results, min_samples),
        # A quantile spec is the pairable check's to report, not a missing metric.
        _presence_check(tuple(r for r in metric_results if not _not_pairable(r))),
        _pairable_check(metric_results),
        _pairs_complete_check([p for _, s, p in scopes[:n_pooled]], max_unpaired_share),
    )
    return _overall(metric_results, tuple(results[n_pooled:]), health)


def _unjudged(m: MetricSpec, stratum: str | None, paired: _Paired, level: float, min_samples: int) -> MetricResult:
    c = paired.comparison
    where = m.name + (f" in stratum {stratum}" if stratum is not None else "")
    missing = "candidate" if c.n_c <= c.n_b else "baseline"
    if c.code is Code.NOT_PAIRABLE:
        reason = (
            f"{where}: a quantile (p{round(m.quantile * 100)}) has no paired form, since the candidate's quantile is"
            " not a function of per-pair differences; judge it on a ramp stage, or pair the log-scale mean instead."
        )
    else:
        reason = {
            Code.NO_DATA: f"{where}: no paired outcomes yet.",
            Code.MISSING_IN_ARM: f"{where}: {c.n_b} baseline and {c.n_c} candidate outcomes but not one complete"
            f" pair (missing in the {missing} arm), so nothing can be compared pair by pair.",
            Code.TOO_LITTLE_DATA: f"{where}: {paired.pairs} pairs, too few to judge (at least {min_samples}).",
            Code.ZERO_VARIANCE: f"{where}: every pair differs by the same amount, so there is no spread to judge"
            " the difference by.",
            Code.NONPOSITIVE_BASELINE: f"{where}: the baseline's level is not positive, so a relative difference"
            " is undefined.",
            Code.NONPOSITIVE_VALUES: f"{where}: no pair has both values positive, so there is no log scale to"
            " compare.",
        }[c.code]
    return MetricResult(
        metric=m.name, stratum=stratum,
        verdict=MetricVerdict.INCONCLUSIVE if c.code is Code.TOO_LITTLE_DATA else MetricVerdict.UNHEALTHY,
        code=c.code, estimate=NAN, lower=NAN, upper=NAN, margin=m.margin, n_baseline=c.n_b, n_candidate=c.n_c,
        baseline_value=c.baseline_value, candidate_value=c.candidate_value, p_value=NAN, e_value=NAN, alpha=level,
        reason=reason,
    )  # fmt: skip


def _not_pairable(r: MetricResult) -> bool:
    return r.code is Code.NOT_PAIRABLE


def _pairable_check(results: tuple[MetricResult, ...]) -> HealthCheck:
    bad = [r for r in results if _not_pairable(r)]
    if bad:
        return HealthCheck("metrics_pairable", False, Code.NOT_PAIRABLE, " ".join(r.reason for r in bad))
    return HealthCheck("metrics_pairable", True, Code.OK, "every metric can be compared pair by pair.")


def _pairs_complete_check(scopes: list[_Paired], max_share: float | None) -> HealthCheck:
    outcomes = sum(p.comparison.n_b + p.comparison.n_c for p in scopes)
    broken = sum(p.unpaired for p in scopes)
    repeated = sum(p.repeated for p in scopes)
    if repeated:
        return HealthCheck(
            "pairs_complete", False, Code.SAMPLE_RATIO_MISMATCH,
            f"{repeated} outcomes repeat a pair id within their arm, so pairs would be counted more than once:"
            " outcome reporting is broken.",
        )  # fmt: skip
    if max_share is not None and outcomes and broken / outcomes > max_share:
        return HealthCheck(
            "pairs_complete", False, Code.SAMPLE_RATIO_MISMATCH,
            f"{broken} of {outcomes} paired outcomes ({broken / outcomes:.1%}) have no partner, more than the"
            f" {max_share:.0%} tolerated: the completed pairs may be a selected subset (e.g. lost slow candidate"
            " calls).",
        )  # fmt: skip
    return HealthCheck("pairs_complete", True, Code.OK, f"{broken} of {outcomes} paired outcomes lack a partner.")


# --------------------------------------------------------------------------- eval_gate


class GateVerdict(StrEnum):
    NON_INFERIOR = "non_inferior"  # the candidate's pass rate is proven within the margin
    NOT_SHOWN = "not_shown"  # not proven: the candidate may be worse by more than the margin
    NOT_GATED = "not_gated"  # too few cases to gate on; reported only


@dataclass(frozen=True)
class EvalGateRow:
    """One category (or all cases, category None) of an eval gate.

    difference = candidate rate - baseline rate (negative: the candidate passes
    fewer cases); `lower` is its one-sided lower confidence bound at `alpha`
    (after Bonferroni for categories). improved: cases only the candidate
    passed; regressed: cases only the baseline passed.
    """

    category: str | None
    n: int
    baseline_rate: float
    candidate_rate: float
    difference: float
    lower: float
    alpha: float
    improved: int
    regressed: int
    gated: bool
    verdict: GateVerdict
    reason: str


@dataclass(frozen=True)
class EvalGateResult:
    passed: bool
    reason: str
    overall: EvalGateRow
    categories: tuple[EvalGateRow, ...]
    margin: float
    alpha: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (NaN becomes None), for the eval results artifact."""
        return _clean(dataclasses.asdict(self))


def tango_score(n, improved, regressed, delta0):
    """Tango's (1998) score statistic for H0: p_c - p_b = delta0 on paired binary outcomes.

    Z = (improved - regressed - n delta0) / sqrt(n (2 q + delta0 (1 - delta0))), where
    q is the maximum-likelihood probability of a regressed pair under H0, the
    positive root of 2n q^2 + B q + C = 0 with B = -(improved + regressed) +
    (2n - improved + regressed) delta0 and C = -regressed delta0 (1 - delta0).
    Large Z is evidence that p_c - p_b > delta0. Arrays broadcast; nan where undefined.
    """
    n = np.asarray(n, dtype=float)
    b = np.asarray(improved, dtype=float)
    c = np.asarray(regressed, dtype=float)
    d0 = np.asarray(delta0, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        a2 = 2.0 * n
        bq = -b - c + (2.0 * n - b + c) * d0
        cq = -c * d0 * (1.0 - d0)
        q = (np.sqrt(np.maximum(0.0, bq * bq - 4.0 * a2 * cq)) - bq) / (2.0 * a2)
        return (b - c - n * d0) / np.sqrt(n * (2.0 * q + d0 * (1.0 - d0)))


def _tango_lower_bound(n: int, improved: int, regressed: int, alpha: float) -> float:
    """The one-sided (1 - alpha) lower bound of p_c - p_b: the smallest delta0 the score test keeps."""
    if n == 0:
        return NAN
    z = norm.isf(alpha)
    estimate = (improved - regressed) / n

    def excess(d0: float) -> float:
        return float(tango_score(n, improved, regressed, d0)) - z

    lo = -1.0 + 1e-12
    # Z falls as delta0 rises and is 0 at the estimate (0/0 there when no case is discordant,
    # hence the step just below it), so the root lies between -1 and the estimate.
    hi = estimate - 1e-12
    if not (hi > lo and excess(lo) > 0):
        return -1.0
    return float(brentq(excess, lo, hi, xtol=1e-10))


def eval_gate(
    cases: Iterable[tuple[str, bool, bool]],
    *,
    margin: float = 0.02,
    alpha: float = 0.05,
    min_cases: int = 30,
) -> EvalGateResult:
    """Does the candidate pass as many cases as the baseline, on the same cases?

    cases: (category, baseline_passed, candidate_passed), one per case.
    margin: the tolerated drop in pass rate, in absolute terms (0.02 = 2 points).
    The gate passes when p_c - p_b > -margin is shown at one-sided level alpha
    overall and, at alpha / (categories tested) (Bonferroni), in every category
    with at least `min_cases` cases; smaller categories are reported, not gated.

    The test is Tango's score test for paired proportions, not an exact or
    mid-p McNemar test: those condition on the discordant cases and are exact
    only for a zero margin (under p_c - p_b = -margin the conditional law still
    depends on the unknown share of discordant cases), whereas the score test
    handles any margin, keeps close to its nominal level with few discordant
    cases, and still works when there is none (a Wald interval then has width 0).
    Bonferroni is not needed for the gate's own error rate (passing needs every
    test to pass: an intersection-union test) but makes the category bounds
    hold simultaneously, so a reader can trust every row at once.
    """
    if not (math.isfinite(margin) and 0 <= margin < 1):
        raise ValueError("margin must lie in [0, 1)")
    if not 0 < alpha < 0.5:
        raise ValueError("alpha must lie in (0, 0.5): it is a one-sided level")
    if min_cases < 1:
        raise ValueError("min_cases must be >= 1")
    # 2x2 counts per category: index 2 * baseline_passed + candidate_passed (n00, n01, n10, n11).
    tables: dict[str, list[int]] = {}
    for category, base, cand in cases:
        tables.setdefault(str(category), [0, 0, 0, 0])[2 * bool(base) + bool(cand)] += 1
    overall = [sum(t[i] for t in tables.values()) for i in range(4)]
    tested = [c for c, t in tables.items() if sum(t) >= min_cases]
    level = alpha / max(len(tested), 1)
    rows = tuple(
        _gate_row(c, tables[c], margin, level if c in tested else alpha, gated=c in tested, min_cases=min_cases)
        for c in sorted(tables)
    )
    total = _gate_row(None, overall, margin, alpha, gated=True, min_cases=min_cases)
    failing = [r for r in (total, *rows) if r.gated and r.verdict is not GateVerdict.NON_INFERIOR]
    if not overall[0] + overall[1] + overall[2] + overall[3]:
        reason = "Fail: there are no cases to judge the candidate on."
    elif failing:
        reason = "Fail: " + failing[0].reason
    else:
        reason = (
            f"Pass: the candidate's pass rate is within {margin * 100:.1f} points of the baseline's overall and in"
            f" all {len(tested)} categories with at least {min_cases} cases."
        )
    return EvalGateResult(not failing and sum(overall) > 0, reason, total, rows, margin, alpha)


def _gate_row(category: str | None, table: list[int], margin: float, alpha: float, *, gated: bool,
              min_cases: int) -> EvalGateRow:  # fmt: skip
    n00, improved, regressed, n11 = table
    n = n00 + improved + regressed + n11
    where = "overall" if category is None else f"in category {category}"
    if n == 0:
        return EvalGateRow(category, 0, NAN, NAN, NAN, NAN, alpha, 0, 0, gated, GateVerdict.NOT_SHOWN,
                           f"{where} there are no cases.")  # fmt: skip
    p_b, p_c = (regressed + n11) / n, (improved + n11) / n
    diff = p_c - p_b
    lower = _tango_lower_bound(n, improved, regressed, alpha)
    # Decide by the test itself, not the bound, so the verdict never hinges on root-finding tolerance.
    shown = bool(tango_score(n, improved, regressed, -margin) > norm.isf(alpha))
    facts = (
        f"{where} the candidate passes {p_c:.1%} of {n} cases against the baseline's {p_b:.1%}"
        f" ({improved} better, {regressed} worse; difference {diff * 100:+.1f} points, at least"
        f" {lower * 100:+.1f} at {1 - alpha:.2%} confidence)"
    )
    if not gated:
        verdict, reason = GateVerdict.NOT_GATED, f"{facts}; fewer than {min_cases} cases, so reported, not gated."
    elif shown:
        verdict, reason = GateVerdict.NON_INFERIOR, f"{facts}, within the tolerated -{margin * 100:.1f} points: non-inferior."
    else:
        verdict = GateVerdict.NOT_SHOWN
        reason = f"{facts}, not shown to be within the tolerated -{margin * 100:.1f} points."
    return EvalGateRow(category, n, p_b, p_c, diff, lower, alpha, improved, regressed, gated, verdict, reason)
