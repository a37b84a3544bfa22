"""One round of online grading: the judges grade the samples the apps kept, within their budgets.

The rollout flow runs a round per check interval (a Prefect task), before the
check, so the grades a round writes are judged at once. A round:

1. meters the judge's spend (last hour, whole rollout) from the grades stored;
2. if the budget is spent, grades nothing and says why (status and summary show it);
3. otherwise grades the oldest ungraded samples on a thread pool (a judge is a
   network call), in waves sized by what the budget still affords;
4. stores each grade and its outcome (the metric named after the judge, credited
   to the variant, stratum and stage that served the answer) in one transaction,
   so a retried round grades nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from rollout.app.evals import load_callable
from rollout.app.reconcile import RolloutRun
from rollout.core.online_eval import OnlineEval
from rollout.store.db import transaction
from rollout.store.samples import GradeRecord, SampleRecord, judge_spend, record_grades, ungraded

log = logging.getLogger("rollout.controller")
ROUND_LIMIT = 2_000     # the most samples one round grades, whatever the budget
CONCURRENCY = 32        # judge calls in flight: at 50 ms a call that is ~600 grades/s


@dataclass(frozen=True, slots=True)
class GradingRound:
    judge: str
    graded: int             # new grades stored this round (with a score)
    failed: int             # the judge could not grade (error stored; the cost still counts)
    spent_usd: float        # what this round cost
    spent_hour: float       # the judge's spend over the last hour, this round included
    spent_total: float      # and over the whole rollout
    paused: str | None      # why grading is paused (budget spent), or None


def load_judge(path: str) -> Callable[[Any, Any], Any]:
    """The scorer a plan names: an object with `grade(input, output)` (an LlmJudge), or a plain callable."""
    target = load_callable(path)
    if isinstance(target, type):
        raise ValueError(f"{path!r} is a class; name an instance or a function")
    return target


def grade_round(engine: Engine, *, flag_id: int, rollout_id: int, spec: OnlineEval,
                judge: Callable[[Any, Any], Any], now: datetime, limit: int = ROUND_LIMIT,
                concurrency: int = CONCURRENCY) -> GradingRound:
    with transaction(engine) as session:
        spent_hour, spent_total, _, dearest = _meter(session, flag_id=flag_id, rollout_id=rollout_id, spec=spec,
                                                     now=now)
        samples = ungraded(session, flag_id=flag_id, rollout_id=rollout_id, judge=spec.name, limit=limit)
    graded = failed = 0
    cost = 0.0
    paused = spec.exhausted(spent_hour, spent_total, dearest or None)
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="online-judge") as pool:
        # In waves (unbounded when there is no budget): after each, the spend is metered again and the next
        # wave is sized by the dearest grade seen (grades cost what their prompts weigh,
        # so a mean would let a round spend past the budget). The budget can then be
        # passed by at most what one wave cost beyond that estimate.
        while samples and paused is None:
            budgeted = spec.per_hour is not None or spec.total is not None
            size = min(concurrency * 4 if budgeted else len(samples), len(samples))
            affordable = spec.affordable(spent_hour, spent_total, dearest or None)
            if affordable is not None:
                size = min(size, affordable)
            elif budgeted:
                size = 1  # no cost seen yet: one grade measures it before a wave is spent
            if size == 0:
                break
            wave, samples = samples[:size], samples[size:]
            grades = list(pool.map(lambda sample: _grade(judge, sample), wave))
            with transaction(engine) as session:
                stored = record_grades(session, flag_id=flag_id, judge=spec.name, samples=wave, grades=grades,
                                       now=now)
            new = [g for g in grades if g.sample_id in stored]
            wave_cost = sum(g.cost_usd for g in new)
            cost, spent_hour, spent_total = cost + wave_cost, spent_hour + wave_cost, spent_total + wave_cost
            dearest = max([dearest, *(g.cost_usd for g in new)])
            failed += sum(1 for g in new if g.score is None)
            graded += sum(1 for g in new if g.score is not None)
            paused = spec.exhausted(spent_hour, spent_total, dearest or None)
    return GradingRound(spec.name, graded, failed, cost, spent_hour, spent_total, paused)


@dataclass(frozen=True, slots=True)
class JudgeState:
    """What `rollout status` and the summary say about one judge: its spend and whether it is paused."""

    judge: str
    grades: int
    spent_hour: float
    spent_total: float
    per_hour: float | None
    total: float | None
    paused: str | None      # why grading is paused (budget spent), or None

    def to_json(self) -> dict[str, Any]:
        return {"judge": self.judge, "grades": self.grades, "spent_hour": self.spent_hour,
                "spent_total": self.spent_total, "per_hour": self.per_hour, "total": self.total,
                "paused": self.paused}


def judge_states(session: Session, *, flag_id: int, rollout_id: int, specs: Sequence[OnlineEval],
                 now: datetime) -> tuple[JudgeState, ...]:
    """Each judge's meter, read from the grades stored (so any process can show it, not only the flow)."""
    out = []
    for spec in specs:
        hour, total, grades, dearest = _meter(session, flag_id=flag_id, rollout_id=rollout_id, spec=spec, now=now)
        out.append(JudgeState(spec.name, grades, hour, total, spec.per_hour, spec.total,
                              spec.exhausted(hour, total, dearest or None)))
    return tuple(out)


def _meter(session: Session, *, flag_id: int, rollout_id: int, spec: OnlineEval,
           now: datetime) -> tuple[float, float, int, float]:
    """A judge's spend over the last hour and the whole rollout, its grades, and its dearest grade."""
    hour, _, _ = judge_spend(session, flag_id=flag_id, rollout_id=rollout_id, judge=spec.name,
                             since=now - timedelta(hours=1))
    total, grades, dearest = judge_spend(session, flag_id=flag_id, rollout_id=rollout_id, judge=spec.name)
    return hour, total, grades, dearest


def grade_online(run: RolloutRun, now: datetime | None = None) -> tuple[GradingRound, ...]:
    """One round of every judge of the run's plan (the loop calls it once per check interval, before the check).

    Never raises: a judge that cannot be loaded or graded is logged and tried again
    next round, because grading must never stop the rollout it watches.
    """
    specs = run.plan.online_evals
    engine = getattr(run.store, "engine", None)
    if not specs or engine is None:
        return ()
    now = now or run.clock.now()
    try:
        with run.store.transaction() as unit:
            record = unit.rollouts.get(run.rollout_id)
    except Exception as exc:  # noqa: BLE001 - the check that follows rides out database faults
        log.warning("online judges of %s: could not read the rollout: %s", run.plan.flag, exc)
        return ()
    if not record.state.status.active:
        return ()
    rounds = []
    for spec in specs:
        try:
            judge = run.judges.get(spec.name)
            if judge is None:
                judge = run.judges[spec.name] = load_judge(spec.scorer)
            result = grade_round(engine, flag_id=record.flag_id, rollout_id=run.rollout_id, spec=spec,
                                 judge=judge, now=now)
        except Exception as exc:  # noqa: BLE001
            log.warning("online judge %s of %s could not grade: %s", spec.name, run.plan.flag, exc)
            continue
        if result.paused:
            log.info("rollout %s: %s", run.plan.flag, result.paused)
        rounds.append(result)
    return tuple(rounds)


def _grade(judge: Callable[[Any, Any], Any], sample: SampleRecord) -> GradeRecord:
    """One grade; a judge's failure is kept as such (with what it cost), never raised into the flow."""
    grade = getattr(judge, "grade", None)
    try:
        if grade is not None:
            result = grade(sample.input, sample.output)
            score, cost = float(result.score), float(result.cost_usd)
        else:
            score, cost = float(judge(sample.input, sample.output)), 0.0
    except Exception as exc:  # noqa: BLE001
        return GradeRecord(sample.id, None, float(getattr(exc, "cost_usd", 0.0) or 0.0),
                           f"{type(exc).__name__}: {exc}"[:500])
    if not 0.0 <= score <= 1.0:
        return GradeRecord(sample.id, None, cost, f"score {score!r} is outside [0, 1]")
    return GradeRecord(sample.id, score, cost)


__all__ = ["CONCURRENCY", "GradingRound", "JudgeState", "ROUND_LIMIT", "grade_online", "grade_round", "judge_states",
           "load_judge"]
