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

from sqlalchemy import and_, case, distinct, func, select
from sqlalchemy.orm import Session, aliased

from rollout.stats import BINS_PER_LN, ArmStats, Evidence, LogHistogram, PairedEvidence, PairStats
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


def load_paired_evidence(
    session: Session,
    *,
    flag_id: int,
    rollout_id: int | None = None,
    metrics: Iterable[str] | None = None,
    baseline: str,
    candidate: str,
    stages: Iterable[int] | None = None,
) -> PairedEvidence:
    """Sufficient statistics of shadow pairs, per (metric, stratum, stage), for `judge_paired`.

    A pair is a baseline row and a candidate row with the same pair_id, metric,
    stratum and stage. One self-join of `outcomes` aggregates the per-pair
    differences (and the 2x2 counts for binary metrics) in SQL; a second GROUP
    BY counts each arm's paired rows, so outcomes whose partner never arrived
    (or a pair id reported twice) show up as such instead of silently shrinking
    or inflating the pairs. Rows without a pair_id are not shadow outcomes and
    are ignored. Takes a Session and never commits.
    """
    b = aliased(Outcome, name="b")
    c = aliased(Outcome, name="c")
    metric_list = None if metrics is None else sorted(set(metrics))
    stage_list = None if stages is None else sorted(set(stages))

    def scope(o, variants):
        where = [o.flag_id == flag_id, o.pair_id.is_not(None), o.variant.in_(variants)]
        if rollout_id is not None:
            where.append(o.rollout_id == rollout_id)
        if metric_list is not None:
            where.append(o.metric.in_(metric_list))
        if stage_list is not None:
            where.append(o.stage.in_(stage_list))
        return where

    d = c.value - b.value
    both_positive = and_(b.value > 0, c.value > 0)
    # ln() only inside the CASE: PostgreSQL raises on ln(0), SQLite returns NULL.
    log_d = case((both_positive, func.ln(c.value) - func.ln(b.value)), else_=None)
    log_b = case((both_positive, func.ln(b.value)), else_=None)
    b_event, c_event = b.value != 0, c.value != 0

    def count_if(condition):
        return func.sum(case((condition, 1), else_=0))

    groups = (b.metric, b.stratum, b.stage)
    pairs_q = (
        select(
            *groups,
            func.count(),
            func.sum(d),
            func.sum(d * d),
            func.sum(b.value),
            func.sum(b.value * b.value),
            func.sum(b.value * d),
            count_if(both_positive),
            func.sum(log_d),
            func.sum(log_d * log_d),
            func.sum(log_b),
            count_if(and_(~b_event, c_event)),
            count_if(and_(b_event, ~c_event)),
            count_if(and_(b_event, c_event)),
            # Not the same as count() when a pair id repeats, which multiplies its rows in the join.
            func.count(distinct(b.pair_id)),
        )
        .select_from(b)
        .join(
            c,
            and_(
                c.pair_id == b.pair_id, c.metric == b.metric, c.stratum == b.stratum, c.stage == b.stage,
                *scope(c, [candidate]),
            ),
        )  # fmt: skip
        .where(*scope(b, [baseline]))
        .group_by(*groups)
    )
    fields: dict[tuple[str, str, int], dict[str, float]] = {}
    names = ("n", "sum_d", "sum_d_sq", "sum_b", "sum_b_sq", "sum_bd", "log_n", "log_sum_d", "log_sum_d_sq",
             "log_sum_b", "n01", "n10", "n11")  # fmt: skip
    matched: dict[tuple[str, str, int], int] = {}
    for metric, stratum, stage, *sums, ids in session.execute(pairs_q):
        key = (metric, stratum, int(stage))
        fields[key] = {
            name: (int(v or 0) if name in ("n", "log_n", "n01", "n10", "n11") else float(v or 0.0))
            for name, v in zip(names, sums, strict=True)
        }  # fmt: skip
        matched[key] = int(ids)

    o = Outcome
    arms_q = (
        select(o.metric, o.variant, o.stratum, o.stage, func.count(), func.count(distinct(o.pair_id)))
        .where(*scope(o, [baseline, candidate]))
        .group_by(o.metric, o.variant, o.stratum, o.stage)
    )
    for metric, variant, stratum, stage, rows, ids in session.execute(arms_q):
        key = (metric, stratum, int(stage))
        cell = fields.setdefault(key, {})
        # An arm's pair ids beyond those that met a partner have none; rows beyond its ids repeat one.
        side = "baseline_only" if variant == baseline else "candidate_only"
        cell[side] = int(ids) - matched.get(key, 0)
        cell["repeated"] = int(cell.get("repeated", 0)) + int(rows) - int(ids)
    return PairedEvidence({key: PairStats(**cell) for key, cell in fields.items()}, baseline, candidate)

