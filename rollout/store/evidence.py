"""Outcomes -> evidence for the judge, aggregated in SQL.

Three GROUP BY queries over the `outcomes` table, none of which ships a raw row
to Python: moments per (metric, variant, stratum, stage), log-spaced histogram
bins per the same groups plus bin (only for the metrics that need quantiles),
and distinct units per (variant, stratum, stage) for the sample-ratio test. Works on SQLite (3.35+ has ln/floor) and
PostgreSQL. Takes a Session and never commits; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import case, distinct, func, select
from sqlalchemy.orm import Session

from rollout.stats import BINS_PER_LN, ArmStats, Evidence, LogHistogram
from rollout.store.models import Allocation, Flag, Outcome


def load_evidence(
    session: Session,
    *,
    flag_id: int,
    rollout_id: int | None = None,
    metrics: Iterable[str] | None = None,
    baseline: str | None = None,
    candidate: str | None = None,
    allocation_bp: Mapping[tuple[str, int], int] | None = None,
    histograms: Iterable[str] | None = None,
    units_metric: str | None = None,
    since: datetime | None = None,
) -> Evidence:
    """Sufficient statistics of a flag's outcomes, per (metric, variant, stratum, stage).

    rollout_id: only this rollout's outcomes (None: every outcome of the flag).
    metrics: only these metrics (None: all).
    baseline, candidate: the variant keys to compare (None: the flag's own).
    allocation_bp: the candidate's share in force per (stratum, stage), in basis
      points, as the plan set it. None: the flag's current allocations, applied
      to the latest stage in the data only (earlier stages then stay out of the
      sample-ratio test, because the store keeps no allocation history).
    histograms: metrics that get log-spaced histograms (the sources of quantile
      comparisons); None: every metric. Each costs a pass over its rows, so the
      controller passes only `[s.metric for s in specs if s.quantile]`.
    units_metric: the metric whose rows are counted as units (distinct unit
      hashes) for the sample-ratio test. None: the metric with the most rows,
      i.e. the one every outcome reports. One metric, not all, because counting
      distinct units over every row costs 4x as much for the same answer.
    since: only outcomes recorded at or after this time.
    """
    if baseline is None or candidate is None:
        row = session.execute(select(Flag.baseline, Flag.candidate).where(Flag.id == flag_id)).one_or_none()
        if row is None:
            # No such flag: an empty Evidence, which the judge reports as "no data".
            return Evidence({}, baseline or "baseline", candidate or "candidate")
        baseline = baseline or row.baseline
        candidate = candidate or row.candidate
    variants = (baseline, candidate)

    where = [Outcome.flag_id == flag_id, Outcome.variant.in_(variants)]
    if rollout_id is not None:
        where.append(Outcome.rollout_id == rollout_id)
    metric_list = None if metrics is None else sorted(set(metrics))
    if metric_list is not None:
        where.append(Outcome.metric.in_(metric_list))
    if since is not None:
        where.append(Outcome.recorded_at >= since)

    value = Outcome.value
    positive = Outcome.value > 0
    # ln() only where the value is positive: PostgreSQL raises on ln(0), SQLite returns NULL.
    log_value = case((positive, func.ln(value)), else_=None)
    groups = (Outcome.metric, Outcome.variant, Outcome.stratum, Outcome.stage)
    moments = (
        select(
            *groups,
            func.count(Outcome.value),
            func.sum(value),
            func.sum(value * value),
            func.sum(case((positive, 1), else_=0)),
            func.sum(log_value),
            func.sum(log_value * log_value),
        )
        .where(*where)
        .group_by(*groups)
    )
    raw: dict[tuple[str, str, str, int], ArmStats] = {}
    for metric, variant, stratum, stage, n, s, ss, log_n, log_s, log_ss in session.execute(moments):
        raw[(metric, variant, stratum, int(stage))] = ArmStats(
            n=int(n),
            sum=float(s or 0.0),
            sum_sq=float(ss or 0.0),
            log_n=int(log_n or 0),
            log_sum=float(log_s or 0.0),
            log_sum_sq=float(log_ss or 0.0),
        )

    hist_metrics = None if histograms is None else sorted(set(histograms))
    if hist_metrics is None or hist_metrics:
        bin_ = func.floor(func.ln(value) * BINS_PER_LN).label("bin")
        hist_where = [*where, positive]
        if hist_metrics is not None:
            hist_where.append(Outcome.metric.in_(hist_metrics))
        hist_q = select(*groups, bin_, func.count()).where(*hist_where).group_by(*groups, bin_)
        bins: dict[tuple[str, str, str, int], dict[int, int]] = {}
        for metric, variant, stratum, stage, b, count in session.execute(hist_q):
            bins.setdefault((metric, variant, stratum, int(stage)), {})[int(b)] = int(count)
        for key, counts in bins.items():
            stats = raw[key]
            raw[key] = ArmStats(
                stats.n, stats.sum, stats.sum_sq, stats.log_n, stats.log_sum, stats.log_sum_sq,
                LogHistogram.from_mapping(counts),
            )  # fmt: skip

    if units_metric is None and raw:
        rows_per_metric: dict[str, int] = {}
        for (metric, *_), stats in raw.items():
            rows_per_metric[metric] = rows_per_metric.get(metric, 0) + stats.n
        units_metric = max(sorted(rows_per_metric), key=rows_per_metric.__getitem__)
    units: dict[tuple[str, str, int], int] = {}
    if units_metric is not None:
        unit_groups = (Outcome.variant, Outcome.stratum, Outcome.stage)
        units_q = (
            select(*unit_groups, func.count(distinct(Outcome.unit_hash)))
            .where(*where, Outcome.metric == units_metric)
            .group_by(*unit_groups)
        )
        units = {(v, s, int(g)): int(n) for v, s, g, n in session.execute(units_q)}

    if allocation_bp is None:
        allocation_bp = {}
        if units:
            latest = max(g for _, _, g in units)
            current = session.execute(
                select(Allocation.stratum, Allocation.basis_points).where(Allocation.flag_id == flag_id)
            ).all()
            allocation_bp = {(stratum, latest): int(bp) for stratum, bp in current}
    return Evidence(raw, baseline, candidate, units, allocation_bp)
