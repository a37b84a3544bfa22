"""The evidence a check judges, read from SQL: rollout.ports.EvidenceSource and EvalRunner over an engine.

Reading is done in its own transaction, without any lock, because aggregating
outcomes can take a while and SQLite would otherwise hold its single write lock
(blocking every app's outcome writes) for that long.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from rollout.app.evals import gate_outcome, run_eval
from rollout.core.controller import EvalOutcome, Observation, RolloutState, Status
from rollout.core.plan import EvalSpec, RolloutPlan, StageKind
from rollout.core.policy import judge_sizing
from rollout.core.records import RolloutRecord
from rollout.core.stats import Verdict, judge, judge_paired
from rollout.errors import InvalidInputError
from rollout.store import outcomes as outcome_store
from rollout.store.evidence import load_evidence, load_paired_evidence
from rollout.store.unit import SqlStore


class StoreEvidence:
    """rollout.ports.EvidenceSource over the outcomes and eval-results tables."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def observe(self, plan: RolloutPlan, rollout: RolloutRecord, now: datetime,
                eval_failure: str | None = None) -> Observation:
        state = rollout.state
        if not state.status.active:
            return Observation()
        with self._store.transaction() as unit:
            session = unit.session
            verdict, samples, unpaired = _judge(session, plan, rollout, state)
            return Observation(verdict, samples, eval_outcome=_eval_outcome(session, plan, rollout, eval_failure),
                               unpaired=unpaired, **_shadow_spend(session, plan, rollout, now))


class StoreEvalRunner:
    """rollout.ports.EvalRunner: both variants on every case not stored yet."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def run(self, rollout_id: int, stage_index: int, spec: EvalSpec, *,
            variants: tuple[str, str]) -> tuple[str | None, int]:
        try:
            return None, run_eval(self._engine, rollout_id, stage_index, spec, variants=variants)
        except InvalidInputError as exc:  # a bad case file or import path: the gate fails with this reason
            return str(exc), 0


def _eval_outcome(session: Any, plan: RolloutPlan, rollout: RolloutRecord,
                  failure: str | None) -> EvalOutcome | None:
    state = rollout.state
    if state.status is not Status.EVALUATING:
        return None
    if failure is not None:
        return EvalOutcome(False, f"the eval could not run: {failure}")
    stage = plan.stages[state.stage_index]
    assert stage.eval is not None
    try:
        outcome, _ = gate_outcome(session, rollout.id, state.stage_index, stage.eval,
                                  variants=(plan.baseline, plan.candidate), alpha=plan.alpha)
    except InvalidInputError as exc:
        return EvalOutcome(False, f"the eval could not run: {exc}")
    return outcome


def _shadow_spend(session: Any, plan: RolloutPlan, rollout: RolloutRecord, now: datetime) -> dict[str, float]:
    """The candidate's spend in this shadow stage, in total and over the last hour, summed by SQL."""
    state = rollout.state
    if state.status is not Status.SHADOW or state.stage_index < 0:
        return {}
    budget = plan.stages[state.stage_index].budget
    if budget is None:
        return {}
    meter = {"flag_id": rollout.flag_id, "rollout_id": rollout.id, "stage": state.stage_index,
             "variant": plan.candidate, "metric": budget.cost_metric}
    total = outcome_store.spend(session, **meter)
    hour = outcome_store.spend(session, **meter, since=now - timedelta(hours=1))
    return {"shadow_spend_total": total, "shadow_spend_hour": hour}


def _judge(session: Any, plan: RolloutPlan, rollout: RolloutRecord,
           state: RolloutState) -> tuple[Verdict | None, int, int]:
    """The judge's verdict on the stage in force (and the live stages before it), its samples per arm, and
    (shadow) how many candidate outcomes came without a pair_id."""
    if state.stage_index < 0:
        return None, 0, 0
    stage = plan.stages[state.stage_index]
    if stage.kind is StageKind.EVAL:
        return None, 0, 0
    if stage.kind is StageKind.SHADOW:
        return _judge_shadow(session, plan, rollout, state)
    if stage.live:
        stages = {i for i, st in enumerate(plan.stages[: state.stage_index + 1]) if st.live}
    else:
        stages = {state.stage_index}
    allocation_bp = {(name, i): bp for i in stages if plan.stages[i].live
                     for name, bp in plan.stages[i].allocations.items()}
    verdict, samples = _judge_arms(session, plan, rollout, state, stages=stages, allocation_bp=allocation_bp)
    return verdict, samples, 0


def _judge_arms(session: Any, plan: RolloutPlan, rollout: RolloutRecord, state: RolloutState, *,
                stages: set[int], allocation_bp: dict[tuple[str, int], int],
                unpaired_only: bool = False) -> tuple[Verdict, int]:
    """Candidate against baseline as two independent arms, with unit-level statistics."""
    recorded = sorted({m.metric for m in plan.metrics})  # a p95 spec reads its source metric
    quantiles = [m for m in plan.metrics if m.quantile is not None]
    # Only the stages judged, so per-unit sums (and their cross-stage terms) cover exactly those.
    evidence = load_evidence(session, flag_id=rollout.flag_id, rollout_id=rollout.id, metrics=recorded,
                             baseline=plan.baseline, candidate=plan.candidate, allocation_bp=allocation_bp,
                             histograms=sorted({m.metric for m in quantiles}), stages=sorted(stages),
                             quantiles=quantiles, unpaired_only=unpaired_only)
    if unpaired_only:
        # Shadow serves everyone the baseline, so no allocation splits units between the arms and exposures
        # are all the baseline's: neither the sample-ratio test nor completion applies.
        evidence = replace(evidence, units={}, allocation_bp={}, completion={}, exposed=False)
    # Samples are units (what min_samples counts), in the stage in force, in the smaller arm.
    samples = min(
        (sum(_stage_units(u, state.stage_index) for (m, v, _s, series), u in evidence.clusters.items()
             if m == metric and v == variant and series == "linear")
         for metric in recorded for variant in (plan.baseline, plan.candidate)),
        default=0,
    )
    sizing = judge_sizing(plan.stages[state.stage_index])
    verdict = judge(evidence, plan.metrics, alpha=plan.alpha, min_samples=sizing.min_samples,
                    planned_samples=sizing.planned_samples, completion=plan.completion)
    return verdict, samples


def _stage_units(sums: Any, stage: int) -> int:
    return dict(zip(sums.stages, sums.units, strict=True)).get(stage, 0)


def _judge_shadow(session: Any, plan: RolloutPlan, rollout: RolloutRecord,
                  state: RolloutState) -> tuple[Verdict | None, int, int]:
    """Shadow: both arms answered the same requests, so compare them pair by pair (far tighter than two arms).

    Candidate outcomes an app recorded without a pair_id (record(..., variant=candidate) for its own shadow
    run) cannot be paired; while there are no pairs they are compared with the baseline's outcomes as two
    independent arms, and counted, so status can say why the comparison is loose.
    """
    stage = plan.stages[state.stage_index]
    paired_metrics = [m for m in plan.metrics if m.quantile is None]  # a quantile has no per-pair difference
    recorded = sorted({m.metric for m in paired_metrics})
    evidence = load_paired_evidence(session, flag_id=rollout.flag_id, rollout_id=rollout.id, metrics=recorded,
                                    baseline=plan.baseline, candidate=plan.candidate, stages=[state.stage_index])
    samples = min((sum(p.n for (m, _s, _g), p in evidence.pairs.items() if m == metric) for metric in recorded),
                  default=0)
    unpaired = outcome_store.unpaired_outcomes(session, flag_id=rollout.flag_id, rollout_id=rollout.id,
                                               stage=state.stage_index, variant=plan.candidate,
                                               metrics={m.metric for m in plan.metrics})
    if samples == 0 and unpaired:
        verdict, samples = _judge_arms(session, plan, rollout, state, stages={state.stage_index}, allocation_bp={},
                                       unpaired_only=True)
        return verdict, samples, unpaired
    sizing = judge_sizing(stage)
    verdict = judge_paired(evidence, paired_metrics, alpha=plan.alpha, min_samples=sizing.min_samples,
                           planned_samples=sizing.planned_samples)
    return verdict, samples, unpaired


__all__ = ["StoreEvalRunner", "StoreEvidence"]
