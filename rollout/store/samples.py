"""Samples (kept inputs and answers) and the online judges' grades of them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rollout.store.db import store_faults
from rollout.store.models import Outcome, Sample, SampleScore


@dataclass(frozen=True, slots=True)
class SampleRecord:
    id: int
    rollout_id: int
    stage: int
    variant: str
    stratum: str
    unit_hash: int
    category: str | None
    input: str
    output: str
    pair_id: int | None = None   # a shadow pair's: its grade is then a paired outcome, as the shadow judge needs


@dataclass(frozen=True, slots=True)
class GradeRecord:
    sample_id: int
    score: float | None     # None: the judge failed (error says why)
    cost_usd: float
    error: str | None = None


def insert_samples(engine: Engine, rows: Iterable[dict]) -> int:
    """Store samples (dicts of the Sample columns but id) in one transaction; returns how many."""
    values = list(rows)
    if values:
        with store_faults(), engine.begin() as conn:
            conn.execute(insert(Sample), values)
    return len(values)


def ungraded(session: Session, *, flag_id: int, rollout_id: int, judge: str, limit: int) -> list[SampleRecord]:
    """The oldest samples of this rollout that this judge has not graded yet.

    Shadow pairs' samples too: in a shadow stage `call()` runs `shadow()`, whose
    pairs are all the judge can see there, and the shadow judge compares pairs,
    so without their grades a plan with judges would wait in shadow for ever.
    """
    q = (select(Sample).outerjoin(SampleScore, and_(SampleScore.sample_id == Sample.id, SampleScore.judge == judge))
         .where(Sample.flag_id == flag_id, Sample.rollout_id == rollout_id, Sample.source.in_(("online", "shadow")),
                SampleScore.sample_id.is_(None))
         .order_by(Sample.id).limit(limit))
    return [SampleRecord(s.id, s.rollout_id, s.stage, s.variant, s.stratum, s.unit_hash, s.category, s.input, s.output,
                         s.pair_id)
            for s in session.scalars(q)]


def judge_spend(session: Session, *, flag_id: int, rollout_id: int, judge: str,
                since: datetime | None = None) -> tuple[float, int, float]:
    """(cost, grades, dearest grade) of this judge on this rollout, optionally since a time: its budget's meter."""
    q = (select(func.coalesce(func.sum(SampleScore.cost_usd), 0.0), func.count(),
                func.coalesce(func.max(SampleScore.cost_usd), 0.0))
         .join(Sample, Sample.id == SampleScore.sample_id)
         .where(Sample.flag_id == flag_id, Sample.rollout_id == rollout_id, SampleScore.judge == judge))
    if since is not None:
        q = q.where(SampleScore.scored_at >= since)
    cost, count, dearest = session.execute(q).one()
    return float(cost or 0.0), int(count or 0), float(dearest or 0.0)


def record_grades(session: Session, *, flag_id: int, judge: str, samples: Sequence[SampleRecord],
                  grades: Sequence[GradeRecord], now: datetime) -> set[int]:
    """Store the grades and, for each new one with a score, an outcome of the sample's exposure.

    Both in the caller's transaction: a grade already stored (a replay, or a
    second scorer) inserts nothing and adds no outcome, so each sample counts
    once. Returns the ids of the samples whose grade was new.
    """
    by_id = {s.id: s for s in samples}
    rows = [{"sample_id": g.sample_id, "judge": judge, "score": g.score, "cost_usd": g.cost_usd,
             "error": g.error, "scored_at": now} for g in grades]
    if not rows:
        return set()
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stored = set(session.scalars(dialect.insert(SampleScore).values(rows).on_conflict_do_nothing()
                             .returning(SampleScore.sample_id)).all())
    scores = {g.sample_id: g.score for g in grades}
    outcomes = [{"flag_id": flag_id, "rollout_id": by_id[i].rollout_id or None, "stage": by_id[i].stage,
                 "variant": by_id[i].variant, "stratum": by_id[i].stratum, "unit_hash": by_id[i].unit_hash,
                 "metric": judge, "value": scores[i], "recorded_at": now, "pair_id": by_id[i].pair_id}
                for i in stored if scores[i] is not None]
    if outcomes:
        session.execute(insert(Outcome), outcomes)
    return stored


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    """A kept input with the baseline's answer to it, and what was seen of it (for eval export)."""

    sample_id: int
    category: str | None
    stratum: str
    input: str
    reference: str                    # the baseline's answer
    candidate: str | None             # the candidate's answer to the same input (shadow pairs only)
    scores: dict[str, float]          # judge grades (online) or the pair's metric values (shadow), by name
    candidate_error: bool = False


def kept_answers(session: Session, *, flag_id: int, baseline: str, source: str,
                 rollout_id: int | None = None) -> list[KeptAnswer]:
    """Every kept baseline answer of a flag (one rollout, or all), with its grades or its pair's outcomes."""
    q = select(Sample).where(Sample.flag_id == flag_id, Sample.source == source)
    if rollout_id is not None:
        q = q.where(Sample.rollout_id == rollout_id)
    rows = list(session.scalars(q.order_by(Sample.id)))
    grades: dict[int, dict[str, float]] = {}
    for sample_id, judge, score in session.execute(
            select(SampleScore.sample_id, SampleScore.judge, SampleScore.score)
            .where(SampleScore.sample_id.in_([r.id for r in rows]), SampleScore.score.is_not(None))):
        grades.setdefault(sample_id, {})[judge] = score
    by_pair: dict[int, dict[str, Sample]] = {}
    for r in rows:
        if r.pair_id is not None:
            by_pair.setdefault(r.pair_id, {})[r.variant] = r
    pair_metrics: dict[int, dict[str, float]] = {}
    errors: set[int] = set()
    if by_pair:
        for pair_id, variant, metric, value in session.execute(
                select(Outcome.pair_id, Outcome.variant, Outcome.metric, Outcome.value)
                .where(Outcome.flag_id == flag_id, Outcome.pair_id.in_(list(by_pair)))):
            arm = "baseline" if variant == baseline else "candidate"
            pair_metrics.setdefault(pair_id, {})[f"{arm}.{metric}"] = value
            if arm == "candidate" and metric == "error" and value:
                errors.add(pair_id)
    answers = []
    for r in rows:
        if r.variant != baseline:
            continue
        other = by_pair.get(r.pair_id, {}) if r.pair_id is not None else {}
        candidate = next((s.output for v, s in other.items() if v != baseline), None)
        scores = dict(grades.get(r.id, {}))
        if r.pair_id is not None:
            scores.update(pair_metrics.get(r.pair_id, {}))
        answers.append(KeptAnswer(r.id, r.category, r.stratum, r.input, r.output, candidate, scores,
                                  r.pair_id in errors if r.pair_id is not None else False))
    return answers


__all__ = ["GradeRecord", "KeptAnswer", "SampleRecord", "insert_samples", "judge_spend", "kept_answers", "record_grades",
           "ungraded"]
