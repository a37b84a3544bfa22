"""judge(): one check of candidate against baseline, from evidence to a verdict."""

from __future__ import annotations

from typing import Any

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rollout.core.stats._evidence import BASIS_POINTS, Evidence
from rollout.core.stats._pooling import binary_variance, clustered_comparison
from rollout.core.stats._sequence import boundary, log_evalue, srm_log_evalue
from rollout.core.stats._spec import CompletionSpec, MetricSpec
from rollout.core.stats._sufficient import BINS_PER_LN, ArmStats, LogHistogram
from rollout.core.stats._verdict import Code, Decision, HealthCheck, MetricResult, MetricVerdict, Verdict

NAN = float("nan")


@dataclass(frozen=True)
class _Comparison:
    """The numbers of one (metric, scope) before any decision, in the worse direction."""

    code: Code
    n_b: int
    n_c: int
    estimate: float = NAN  # candidate worse by this much (scale of the test)
    sd: float = NAN
    k: float = NAN  # information so far / planned information
    margin: float = 0.0  # tolerated worsening on the test's scale
    baseline_value: float = NAN
    candidate_value: float = NAN


def _compare(spec: MetricSpec, ev: Evidence, cells, min_samples: int, planned_samples: int) -> _Comparison:
    base = [ev.arm(spec.metric, ev.baseline, s, g) for s, g in cells]
    cand = [ev.arm(spec.metric, ev.candidate, s, g) for s, g in cells]
    rows_b = sum(a.n for a in base)
    rows_c = sum(a.n for a in cand)
    if rows_b == 0 and rows_c == 0:
        return _Comparison(Code.NO_DATA, rows_b, rows_c)
    if rows_b == 0 or rows_c == 0:
        return _Comparison(Code.MISSING_IN_ARM, rows_b, rows_c)
    # Samples are units (the randomisation's), where the evidence knows them.
    n_b = _units(ev, spec.metric, ev.baseline, cells, rows_b)
    n_c = _units(ev, spec.metric, ev.candidate, cells, rows_c)
    if min(n_b, n_c) < min_samples:
        return _Comparison(Code.TOO_LITTLE_DATA, n_b, n_c)

    if (spec.scale == "log" or spec.quantile is not None) and min(
        sum(a.log_n for a in base), sum(a.log_n for a in cand)
    ) == 0:
        return _Comparison(Code.NONPOSITIVE_VALUES, n_b, n_c)
    sign = 1.0 if spec.better == "lower" else -1.0
    relative = spec.relative
    margin = spec.margin
    if spec.quantile is not None:
        pooled_b = _pooled_histogram(base)
        thresholds = exceedance_thresholds(pooled_b, spec.quantile, spec.margin)
        if thresholds is None:
            return _Comparison(Code.NONPOSITIVE_VALUES, n_b, n_c)
        t_b, t_c = thresholds
        cols_b = _exceedance_columns(ev, spec.metric, ev.baseline, cells, base, t_b)
        cols_c = _exceedance_columns(ev, spec.metric, ev.candidate, cells, cand, t_c)
        base_q, cand_q = pooled_b.quantile(spec.quantile), _pooled_histogram(cand).quantile(spec.quantile) or NAN
        relative, margin = False, 0.0  # the margin is already in the candidate's threshold
    elif spec.kind == "binary":
        cols_b = _columns(ev, spec.metric, ev.baseline, cells, base, "linear", binary=True)
        cols_c = _columns(ev, spec.metric, ev.candidate, cells, cand, "linear", binary=True)
    else:
        cols_b = _columns(ev, spec.metric, ev.baseline, cells, base, spec.scale, binary=False)
        cols_c = _columns(ev, spec.metric, ev.candidate, cells, cand, spec.scale, binary=False)
        if spec.scale == "log":
            relative = False
            margin = math.log1p(margin) if spec.better == "lower" else -math.log1p(-min(margin, 1 - 1e-12))
    est, var, n_eff, mc, mb = clustered_comparison(*cols_c, *cols_b, relative=relative)
    if spec.quantile is not None:
        mb, mc = base_q, cand_q
    elif spec.scale == "log":
        mb, mc = _exp(mb), _exp(mc)  # geometric means
    return _finish(est, var, n_eff, mb, mc, n_b, n_c, sign, margin, relative, planned_samples)


def _exp(x: float) -> float:
    """exp that saturates: a degenerate log-mean (hypothesis finds them) is an infinite value, not an exception."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _finish(est, var, n_eff, mb, mc, n_b, n_c, sign, margin, relative, planned_samples) -> _Comparison:
    if not math.isfinite(est) and relative and not float(mb) > 0:
        return _Comparison(Code.NONPOSITIVE_BASELINE, n_b, n_c, baseline_value=float(mb), candidate_value=float(mc))
    if not (math.isfinite(var) and var > 0 and n_eff > 0):
        return _Comparison(Code.ZERO_VARIANCE, n_b, n_c, baseline_value=float(mb), candidate_value=float(mc))
    return _Comparison(
        Code.OK,
        n_b,
        n_c,
        estimate=sign * est,
        sd=math.sqrt(var),
        k=n_eff / (planned_samples / 2.0),
        margin=margin,
        baseline_value=float(mb),
        candidate_value=float(mc),
    )


def _units(ev: Evidence, metric: str, variant: str, cells, rows: int) -> int:
    """Distinct units of this arm over these cells' strata, or the row count if the evidence has no unit sums."""
    total = 0
    for stratum in {s for s, _ in cells}:
        sums = ev.clusters.get((metric, variant, stratum, "linear"))
        if sums is None:
            return rows
        stages = {g for s, g in cells if s == stratum}
        if set(sums.stages) <= stages:
            total += sums.units_total
        else:  # a per-stage scope: the stage's units (a unit is counted once per stage)
            total += sum(k for g, k in zip(sums.stages, sums.units, strict=True) if g in stages)
    return total


def _columns(ev: Evidence, metric: str, variant: str, cells, arms: list[ArmStats], scale: str, *, binary: bool):
    """(units per cell, ratio mean per cell, covariance matrix of those means) for one arm.

    With per-unit sums: the cluster-robust (delta-method) covariance, including
    the covariance between stages of one stratum, whose units are the same.
    Without: each outcome its own unit (diagonal, var / n), as before units were known.
    A binary metric's variance is never below the row-level one from p~ = (x+1)/(n+2),
    so an arm that has seen no error yet does not claim infinite precision.
    """
    if scale == "log":
        rows = np.array([a.log_n for a in arms], dtype=float)
    else:
        rows = np.array([a.n for a in arms], dtype=float)
    clustered = _cluster_columns(ev, metric, variant, cells, scale)
    if clustered is not None:
        units, mean, cov = clustered
    else:
        moments = [a.moments(scale) for a in arms]
        n = np.array([m[0] for m in moments], dtype=float)
        mean = np.array([m[1] for m in moments], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = np.array([m[2] for m in moments], dtype=float) / n
        if binary:
            var = np.zeros_like(var)  # the floor below is the row-level binary variance, exactly as before
        units, cov = rows, np.diag(np.where(n >= 2, var, np.nan))
    if binary:
        x = np.array([a.sum for a in arms], dtype=float)
        _floor(cov, binary_variance(x, rows), rows)
    return units, mean, cov


def _exceedance_columns(ev: Evidence, metric: str, variant: str, cells, arms: list[ArmStats], threshold: int):
    """A quantile comparison as a comparison of rates: the share of an arm's positive outcomes in bins >= threshold."""
    rows = np.array([a.histogram.total for a in arms], dtype=float)
    x = np.array([a.histogram.count_at_or_above(threshold) for a in arms], dtype=float)
    clustered = _cluster_columns(ev, metric, variant, cells, f"exceed:{threshold}")
    if clustered is not None:
        units, mean, cov = clustered
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            units, mean, cov = rows, x / rows, np.diag(np.where(rows >= 2, 0.0, np.nan))
    _floor(cov, binary_variance(x, rows), rows)
    return units, mean, cov


def _floor(cov: np.ndarray, per_outcome_variance: np.ndarray, rows: np.ndarray) -> None:
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = per_outcome_variance / rows
    d = np.diagonal(cov).copy()
    np.fill_diagonal(cov, np.where(np.isfinite(d), np.maximum(d, np.where(rows > 0, floor, 0.0)), d))


def _cluster_columns(ev: Evidence, metric: str, variant: str, cells, series: str):
    """Cluster-robust columns from the evidence's per-unit sums, or None if any stratum lacks them."""
    if not ev.clusters:
        return None
    c = len(cells)
    units = np.zeros(c)
    mean = np.full(c, NAN)
    cov = np.zeros((c, c))
    by_stratum: dict[str, list[int]] = {}
    for i, (s, _) in enumerate(cells):
        by_stratum.setdefault(s, []).append(i)
    for stratum, idx in by_stratum.items():
        sums = ev.clusters.get((metric, variant, stratum, series))
        if sums is None:
            return None
        stages = [cells[i][1] for i in idx]
        r, block = sums.covariance(stages)
        k_of = dict(zip(sums.stages, sums.units, strict=True))
        for a, i in enumerate(idx):
            units[i] = k_of.get(cells[i][1], 0)
            mean[i] = r[a]
            for b, j in enumerate(idx):
                cov[i, j] = block[a][b]
    return units, mean, cov


def exceedance_thresholds(pooled_baseline: LogHistogram, quantile: float, margin: float) -> tuple[int, int] | None:
    """The histogram bins (baseline, candidate) above which a p-quantile comparison counts outcomes.

    If the candidate's q-quantile is no more than (1 + margin) times the baseline's,
    at most a share 1 - q of candidate outcomes lie above (1 + margin) x that value;
    so "candidate share above the shifted threshold minus baseline share above the
    threshold" is <= 0 when the candidate is acceptable, and its confidence
    sequence is the ordinary one for a difference of rates. Thresholds are bin
    edges of the fixed log histogram (5 % resolution). The store uses the same
    function to count exceedances per unit.
    """
    q_bin = pooled_baseline.quantile_bin(quantile)
    if q_bin is None:
        return None
    t_b = q_bin + 1
    return t_b, t_b + round(math.log1p(margin) * BINS_PER_LN)


def _pooled_histogram(arms: list[ArmStats]) -> LogHistogram:
    acc: dict[int, int] = {}
    for a in arms:
        for b, c in a.histogram.counts:
            acc[b] = acc.get(b, 0) + c
    return LogHistogram.from_mapping(acc)


def _check_arguments(metrics: Sequence[MetricSpec], *, alpha: float, correction: str, strata_alpha_share: float,
                    planned_samples: int, min_samples: int) -> list[MetricSpec]:
    """Programmer misuse of a judge raises here (data never does); returns the metrics as a list."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1)")
    if correction not in ("holm", "bonferroni"):
        raise ValueError("correction must be 'holm' or 'bonferroni'")
    if not 0 <= strata_alpha_share < 1:
        raise ValueError("strata_alpha_share must lie in [0, 1)")
    if planned_samples < 2 or min_samples < 0:
        raise ValueError("planned_samples must be >= 2 and min_samples >= 0")
    metrics = list(metrics)
    if len({m.name for m in metrics}) != len(metrics):
        raise ValueError("metric names must be unique")
    return metrics


def _sequential_tests(comps: Sequence[Any], n_pooled: int, *, alpha: float, pooled_alpha: float, stratum_alpha: float,
             correction: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """p-values, log e-values, levels, harm and non-inferiority radii for every comparison, in one vectorised pass.

    The first `n_pooled` comparisons are the pooled ones: Holm (or Bonferroni)
    shares `pooled_alpha` among them; per-stratum ones get `stratum_alpha`
    each. Non-inferiority is tested at `alpha` (intersection-union: no
    correction needed).
    """
    ok = [c.code is Code.OK for c in comps]
    u = np.array([(c.estimate - c.margin) / c.sd if good else 0.0 for c, good in zip(comps, ok, strict=True)])
    k = np.array([c.k if good else 1.0 for c, good in zip(comps, ok, strict=True)])
    log_e = log_evalue(u, k)
    with np.errstate(over="ignore"):  # a hugely negative log e-value is just p = 1
        p = np.minimum(1.0, np.exp(-log_e))
    levels = np.full(len(comps), stratum_alpha)
    levels[:n_pooled] = _levels(p[:n_pooled], ok[:n_pooled], pooled_alpha, correction)
    return p, log_e, levels, boundary(k, levels), boundary(k, np.full(len(comps), alpha))


def judge(
    evidence: Evidence,
    metrics: Sequence[MetricSpec],
    *,
    alpha: float = 0.05,
    min_samples: int = 100,
    planned_samples: int = 2_000,
    correction: str = "holm",
    strata_alpha_share: float = 0.2,
    srm_alpha: float = 0.001,
    srm_planned_units: int = 200_000,
    completion: CompletionSpec | None = None,
) -> Verdict:
    """Compare candidate with baseline on every metric; never raises on data.

    alpha: the chance of a false rollback over the whole rollout, however often
      this is called (anytime-valid), across all metrics (Holm or Bonferroni).
      A share `strata_alpha_share` of it is spent on per-stratum verdicts when
      there is more than one stratum. Non-inferiority ("pass") is an
      intersection-union test: each metric at alpha, no correction needed.
    min_samples: per arm, below it a metric gets no verdict and the check holds.
    planned_samples: per arm, the sample size the stage plans for; the confidence
      sequence is tightest around it.
    srm_alpha: false alarm rate of the sample-ratio test over the whole rollout
      (and of the completion test's "outcomes are lost" alarm).
    completion: how to judge exposures without outcomes (default CompletionSpec():
      a proven loss holds, PASS needs a loss above 1 % excluded); only when the
      evidence has exposures.
    """
    if not 0 < srm_alpha < 1:
        raise ValueError("srm_alpha must lie in (0, 1)")
    metrics = _check_arguments(metrics, alpha=alpha, correction=correction, strata_alpha_share=strata_alpha_share,
                              planned_samples=planned_samples, min_samples=min_samples)

    strata = evidence.strata
    split = len(strata) > 1 and strata_alpha_share > 0
    pooled_alpha = alpha * (1 - strata_alpha_share) if split else alpha
    n_metrics = max(len(metrics), 1)
    stratum_alpha = alpha * strata_alpha_share / (len(strata) * n_metrics) if split else NAN

    pooled = [_compare(m, evidence, evidence.cells(m.metric), min_samples, planned_samples) for m in metrics]
    per_stratum = []
    if split:
        for s in strata:
            for m in metrics:
                cells = [c for c in evidence.cells(m.metric) if c[0] == s]
                per_stratum.append((s, m, _compare(m, evidence, cells, min_samples, planned_samples)))

    comps = pooled + [c for _, _, c in per_stratum]
    p, log_e, levels, r_harm, r_ni = _sequential_tests(comps, len(pooled), alpha=alpha, pooled_alpha=pooled_alpha,
                                              stratum_alpha=stratum_alpha, correction=correction)

    results = []
    for i, c in enumerate(comps):
        m = metrics[i] if i < len(pooled) else per_stratum[i - len(pooled)][1]
        stratum = None if i < len(pooled) else per_stratum[i - len(pooled)][0]
        results.append(_result(m, stratum, c, float(p[i]), float(log_e[i]), float(levels[i]), r_harm[i], r_ni[i]))
    metric_results = tuple(results[: len(pooled)])
    stratum_results = tuple(results[len(pooled) :])

    completion = completion or CompletionSpec()
    health = (
        _srm_check(evidence, srm_alpha, srm_planned_units),
        _completion_check(evidence, completion, alpha=alpha, srm_alpha=srm_alpha, min_samples=min_samples,
                          planned_samples=planned_samples),
        _enough_data_check(metric_results, min_samples),
        _presence_check(metric_results),
    )
    return _overall(metric_results, stratum_results, health, completion)


def _levels(p: np.ndarray, tested: list[bool], alpha: float, correction: str) -> np.ndarray:
    """The alpha each metric's harm test is held to (Holm: step-down; Bonferroni: alpha/m)."""
    m = len(p)
    levels = np.full(m, alpha / max(m, 1))
    if correction == "bonferroni" or m == 0:
        return levels
    order = sorted(range(m), key=lambda i: (not tested[i], p[i]))
    for rank, i in enumerate(order):
        levels[i] = alpha / (m - rank)
        if not (tested[i] and p[i] <= levels[i]):
            # Holm stops at the first hypothesis it cannot reject; the rest keep this level.
            for j in order[rank + 1 :]:
                levels[j] = levels[i]
            break
    return levels


def _result(m: MetricSpec, stratum, c: _Comparison, p, log_e, level, r_harm, r_ni) -> MetricResult:
    where = f"{m.name}" + (f" in stratum {stratum}" if stratum is not None else "")
    show = _display(m)
    common = dict(
        metric=m.name,
        stratum=stratum,
        margin=m.margin,
        n_baseline=c.n_b,
        n_candidate=c.n_c,
        baseline_value=c.baseline_value,
        candidate_value=c.candidate_value,
        alpha=level,
    )
    if c.code is not Code.OK:
        verdict = MetricVerdict.INCONCLUSIVE if c.code is Code.TOO_LITTLE_DATA else MetricVerdict.UNHEALTHY
        reason = {
            Code.NO_DATA: f"{where}: no outcomes in either arm yet.",
            Code.MISSING_IN_ARM: f"{where}: reported by only one arm (baseline {c.n_b}, candidate {c.n_c} outcomes),"
            " so the arms cannot be compared.",
            Code.TOO_LITTLE_DATA: f"{where}: {min(c.n_b, c.n_c)} units in the smaller arm, too few to judge.",
            Code.ZERO_VARIANCE: f"{where}: every value is the same, so there is no spread to judge a difference by.",
            Code.NONPOSITIVE_BASELINE: f"{where}: the baseline's level is not positive, so a relative difference"
            " is undefined.",
            Code.NONPOSITIVE_VALUES: f"{where}: an arm has no positive values, so there is no log scale or"
            " quantile to compare.",
        }[c.code]
        return MetricResult(
            verdict=verdict, code=c.code, estimate=NAN, lower=NAN, upper=NAN, p_value=NAN, e_value=NAN,
            reason=reason, **common,
        )  # fmt: skip
    lower = c.estimate - float(r_harm) * c.sd
    upper = c.estimate + float(r_ni) * c.sd
    est_s, low_s, up_s, margin_s = show(c.estimate), show(lower), show(upper), show(c.margin)
    if p <= level:
        verdict = MetricVerdict.HARM
        reason = (
            f"{where}: candidate worse by {est_s} (at least {low_s}), beyond the tolerated {margin_s}: harm."
        )
    elif upper < c.margin:
        verdict = MetricVerdict.NON_INFERIOR
        reason = f"{where}: candidate worse by at most {up_s}, within the tolerated {margin_s}: non-inferior."
    else:
        verdict = MetricVerdict.INCONCLUSIVE
        reason = (
            f"{where}: candidate worse by {est_s} (between {low_s} and {up_s}); not yet clear against the"
            f" tolerated {margin_s}."
        )
    return MetricResult(
        verdict=verdict, code=Code.OK, estimate=_natural(m, c.estimate),
        lower=_natural(m, lower), upper=_natural(m, upper), p_value=p, e_value=math.exp(min(log_e, 700.0)),
        reason=reason, **common,
    )  # fmt: skip


def _natural(m: MetricSpec, x: float) -> float:
    """Log-scale results are reported as a relative change of the geometric mean, in the worse direction."""
    if m.scale == "log" and m.quantile is None:
        # Clamped: a degenerate arm can give a log-ratio beyond what a float can exponentiate.
        x = max(-700.0, min(700.0, x)) if x == x else x
        return math.expm1(x) if m.better == "lower" else -math.expm1(-x)
    return x


def _display(m: MetricSpec):
    if m.quantile is not None:
        return lambda x: f"{x * 100:+.2f} points of share above the p{round(m.quantile * 100)}"
    if m.scale == "log" or m.relative:
        return lambda x: f"{_natural(m, x) * 100:.2f}%"
    if m.kind == "binary":
        return lambda x: f"{x * 100:.2f} points"
    return lambda x: f"{x:.4g}"


def _srm_check(ev: Evidence, srm_alpha: float, planned_units: int) -> HealthCheck:
    cand, total, share = [], [], []
    for (stratum, stage), bp in sorted(ev.allocation_bp.items()):
        c = ev.units.get((ev.candidate, stratum, stage), 0)
        b = ev.units.get((ev.baseline, stratum, stage), 0)
        if not 0 < bp < BASIS_POINTS:
            if (bp <= 0 and c > 0) or (bp >= BASIS_POINTS and b > 0):
                return HealthCheck(
                    "sample_ratio", False, Code.SAMPLE_RATIO_MISMATCH,
                    f"stratum {stratum} stage {stage}: allocation {bp} bp but units in the other arm"
                    f" (baseline {b}, candidate {c}).",
                    math.inf,
                )  # fmt: skip
            continue
        cand.append(c)
        total.append(c + b)
        share.append(bp / BASIS_POINTS)
    if not total:
        return HealthCheck("sample_ratio", True, Code.NO_ALLOCATION, "no split allocation yet, nothing to check.")
    log_e = float(srm_log_evalue(cand, total, share, planned_units))
    e = math.exp(min(log_e, 700.0))
    expected = sum(t * s for t, s in zip(total, share, strict=True))
    if log_e >= -math.log(srm_alpha):
        return HealthCheck(
            "sample_ratio", False, Code.SAMPLE_RATIO_MISMATCH,
            f"the candidate got {sum(cand)} units where the allocation expects {expected:.0f}"
            f" (e-value {e:.3g} >= {1 / srm_alpha:.0f}): assignment or outcome reporting is broken.",
            e,
        )  # fmt: skip
    return HealthCheck(
        "sample_ratio", True, Code.OK,
        f"the candidate got {sum(cand)} units, in line with the {expected:.0f} the allocation expects.", e,
    )  # fmt: skip


def _completion_check(ev: Evidence, spec: CompletionSpec, *, alpha: float, srm_alpha: float, min_samples: int,
                      planned_samples: int) -> HealthCheck:
    """Outcomes per exposure, candidate against baseline, per unit: is the candidate losing requests?"""
    if not ev.completion:
        return HealthCheck("completion", True, Code.NO_EXPOSURES, "no exposures recorded, so completion is not checked.")
    strata = sorted({s for (v, s) in ev.completion if v in (ev.baseline, ev.candidate)})
    cols = []
    for variant in (ev.candidate, ev.baseline):
        units, mean, cov = np.zeros(len(strata)), np.full(len(strata), NAN), np.zeros((len(strata), len(strata)))
        rows, done = np.zeros(len(strata)), np.zeros(len(strata))
        for i, s in enumerate(strata):
            sums = ev.completion.get((variant, s))
            if sums is None or not sums.stages:
                continue
            r, block = sums.covariance(sums.stages[:1])
            units[i], mean[i], cov[i, i] = sums.units_total, r[0], block[0][0]
            rows[i], done[i] = sums.n[0], sums.y[0]
        _floor(cov, binary_variance(done, rows), rows)
        # Weights (and the information ratio k) count exposures, not units: a loss is a per-request event
        # and heavy users carry most of the evidence; the variance stays per unit.
        cols.append((rows, mean, cov, units))
    n_c, n_b = int(cols[0][3].sum()), int(cols[1][3].sum())
    cols = [c[:3] for c in cols]
    if min(n_c, n_b) < max(min_samples, 2):
        return HealthCheck("completion", True, Code.COMPLETION_UNPROVEN,
                           f"completion is not proven yet ({min(n_c, n_b)} exposed units in the smaller arm).")
    est, var, n_eff, mc, mb = clustered_comparison(*cols[0], *cols[1], relative=True)
    if not (math.isfinite(est) and math.isfinite(var) and n_eff > 0):
        return HealthCheck("completion", True, Code.COMPLETION_UNPROVEN, "completion cannot be compared yet.")
    loss, sd = -est, math.sqrt(max(var, 1e-18))
    k = n_eff / (planned_samples / 2.0)
    log_e = float(log_evalue(loss / sd, k))
    upper = loss + float(boundary(k, alpha)) * sd
    shares = f"candidate {mc:.2%} of exposures produced an outcome, baseline {mb:.2%}"
    if log_e >= -math.log(srm_alpha):
        return HealthCheck(
            "completion", False, Code.OUTCOME_LOSS,
            f"the candidate loses outcomes ({shares}; loss {loss:.2%}, e-value {math.exp(min(log_e, 700.0)):.3g}"
            f" >= {1 / srm_alpha:.0f}): it may crash or time out without reporting.",
            math.exp(min(log_e, 700.0)),
        )  # fmt: skip
    if upper < spec.tolerance:
        return HealthCheck("completion", True, Code.OK,
                           f"{shares}: a loss above {spec.tolerance:.1%} is excluded (at most {upper:.2%}).",
                           math.exp(min(log_e, 700.0)))  # fmt: skip
    return HealthCheck("completion", True, Code.COMPLETION_UNPROVEN,
                       f"{shares}: a loss above {spec.tolerance:.1%} is not yet excluded (up to {upper:.2%}).",
                       math.exp(min(log_e, 700.0)))  # fmt: skip


def _enough_data_check(results: tuple[MetricResult, ...], min_samples: int) -> HealthCheck:
    short = [r.metric for r in results if r.code is Code.TOO_LITTLE_DATA]
    if short:
        return HealthCheck(
            "enough_data", False, Code.TOO_LITTLE_DATA,
            f"fewer than {min_samples} samples per arm for {', '.join(short)}.",
        )  # fmt: skip
    return HealthCheck("enough_data", True, Code.OK, f"at least {min_samples} samples per arm for every metric.")


def _presence_check(results: tuple[MetricResult, ...]) -> HealthCheck:
    missing = [r for r in results if r.code in (Code.MISSING_IN_ARM, Code.NO_DATA)]
    if missing:
        return HealthCheck(
            "metrics_present", False, missing[0].code,
            "; ".join(r.reason.rstrip(".") for r in missing) + ".",
        )  # fmt: skip
    return HealthCheck("metrics_present", True, Code.OK, "every metric is reported by both arms.")


def _overall(metrics, strata, health, completion: CompletionSpec | None = None) -> Verdict:
    harmed = [r for r in (*metrics, *strata) if r.verdict is MetricVerdict.HARM]
    failing = [h for h in health if not h.ok]
    lost = [h for h in failing if h.code is Code.OUTCOME_LOSS]
    unproven = [h for h in health if h.code is Code.COMPLETION_UNPROVEN]
    if harmed:
        decision, reason = Decision.ROLLBACK, "Roll back: " + harmed[0].reason
    elif lost and completion is not None and completion.on_loss == "rollback":
        decision, reason = Decision.ROLLBACK, "Roll back: " + lost[0].reason
    elif failing:
        decision, reason = Decision.HOLD, "Hold: " + failing[0].reason
    elif unproven and metrics and all(r.verdict is MetricVerdict.NON_INFERIOR for r in metrics):
        decision, reason = Decision.CONTINUE, "Continue: every metric is within its margin, but " + unproven[0].reason
    elif metrics and all(r.verdict is MetricVerdict.NON_INFERIOR for r in metrics):
        decision, reason = Decision.PASS, "Pass: every metric is proven within its margin and the data is healthy."
    elif not metrics:
        decision, reason = Decision.CONTINUE, "Continue: the plan names no metric to judge."
    else:
        open_ = [r.metric for r in metrics if r.verdict is not MetricVerdict.NON_INFERIOR]
        decision, reason = Decision.CONTINUE, f"Continue: not yet proven within margin: {', '.join(open_)}."
    return Verdict(decision, reason, metrics, strata, health)
