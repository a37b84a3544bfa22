"""One check of a rollout: load state, ask the judge, ask the controller, apply, record. Idempotent.

Both the Prefect flow and the plain foreground loop call `check`. Everything a
check writes (allocations, the rollout's state, the lease, the decision row)
goes into one transaction, so a check that fails half-way leaves nothing
behind and can simply be retried; a check retried after it committed finds
the state already moved and the decision already there.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from rollout.core.controller import (
    Emit,
    EvalOutcome,
    Observation,
    RequestApproval,
    RollBack,
    RolloutState,
    SetAllocations,
    Status,
    Step,
    next_step,
)
from rollout.core.flag import Phase
from rollout.core.plan import RolloutPlan, StageKind
from rollout.core.policy import judge_sizing
from rollout.errors import InvalidInputError, VersionConflictError
from rollout.app.evals import gate_outcome
from rollout.core.stats import Verdict, judge, judge_paired
from rollout.store import flags as flag_store
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction
from rollout.store.evidence import load_evidence, load_paired_evidence
from rollout.store import outcomes as outcome_store
from rollout.store.models import utcnow

log = logging.getLogger("rollout.controller")
CONTROLLER = "rollout-controller"


@dataclass
class RolloutRun:
    """What one controller process knows about the rollout it drives."""

    engine: Engine
    plan: RolloutPlan
    document: dict[str, Any]
    owner: str
    rollout_id: int
    namespace: str = "default"
    events: list[Emit] = field(default_factory=list)

    @property
    def lease_for(self) -> timedelta:
        return lease_for(self.plan)


def lease_for(plan: RolloutPlan) -> timedelta:
    """Three missed checks (at least 5 s) before a restarted controller may take a rollout over."""
    return max(3 * plan.check_interval, timedelta(seconds=5))


@dataclass(frozen=True)
class CheckResult:
    step: Step
    verdict: Verdict | None
    sequence: int | None
    owned: bool = True            # False: another controller holds the rollout now; stop quietly
    conflict: bool = False        # the flag changed under us; the next check will see why


def claim(engine: Engine, plan: RolloutPlan, document: dict[str, Any], *, owner: str, actor: str,
          flow_run_id: str | None = None, namespace: str = "default") -> RolloutRun:
    """Start the rollout (or take over a lost one). Raises RolloutActiveError if it is someone else's."""
    with transaction(engine) as s:
        record = rollout_store.start_rollout(s, plan, document, actor=actor, owner=owner, lease_for=lease_for(plan),
                                             flow_run_id=flow_run_id, namespace=namespace)
    return RolloutRun(engine, plan, document, owner, record.id, namespace)


def check(run: RolloutRun, now: datetime | None = None, *, eval_failure: str | None = None) -> CheckResult:
    """One check. `eval_failure`: the eval stage's runner could not run (bad case file, import error).

    Two transactions: the evidence is read and judged first, without any
    lock, because aggregating outcomes can take a while and SQLite would
    otherwise hold its single write lock (blocking every app's outcome writes)
    for that long. The decision is then made and applied in a short write
    transaction, which re-reads the rollout and drops the verdict if the stage
    moved in between.
    """
    now = now or utcnow()
    plan = run.plan
    with transaction(run.engine) as s:
        seen = rollout_store.get_rollout(s, run.rollout_id)
        measured = _measure(s, run, seen, now, eval_failure) if seen.state.status.active else None
    try:
        with transaction(run.engine) as s:
            # Lock our rollout row first (flag after), the order a manual rollback uses too.
            renewed = rollout_store.renew_lease(s, run.rollout_id, owner=run.owner, lease_for=run.lease_for, now=now)
            record = rollout_store.get_rollout(s, run.rollout_id)
            if not record.state.status.active:
                # Ended elsewhere: `rollout rollback` by hand ends the active rollout with the flag.
                step = Step(record.state, (), "none", record.state.reason)
                return CheckResult(step, None, None, owned=record.lease_owner == run.owner)
            if not renewed:
                return CheckResult(Step(record.state, (), "none", "another controller owns this rollout"),
                                   None, None, owned=False)
            state = record.state
            if measured is None or (state.status, state.stage_index) != (seen.state.status, seen.state.stage_index):
                raise VersionConflictError("the stage moved while the evidence was being judged")
            flag = flag_store.get_flag(s, plan.flag, namespace=run.namespace)
            verdict, samples, extra = measured
            observation = Observation(verdict, samples, _rolled_back_by_hand(s, run, flag.phase, state),
                                      shadow_sampling=flag.shadow_bp > 0, **extra)
            step = next_step(plan, state, observation, rollout_store.approval_inputs(s, run.rollout_id), now)
            # State first: a final state frees the flag, so the rollback below
            # finds no active rollout left to end.
            if not rollout_store.save_state(s, run.rollout_id, step.state, owner=run.owner, now=now):
                raise VersionConflictError("the rollout changed while this check was running")
            _apply(s, run, step, flag.version)
            sequence = rollout_store.next_sequence(s, run.rollout_id)
            rollout_store.record_decision(
                s, run.rollout_id, sequence=sequence, stage_index=step.state.stage_index,
                verdict=verdict.decision.value if verdict else "none", action=step.action, reason=step.reason,
                details=decision_details(verdict, samples),
            )
    except VersionConflictError as exc:
        log.info("rollout %s: %s; checking again", plan.flag, exc)
        return CheckResult(Step(seen.state, (), "conflict", str(exc)), None, None, conflict=True)
    run.events.extend(e for e in step.effects if isinstance(e, Emit))
    return CheckResult(step, verdict, sequence)


def _measure(session: Any, run: RolloutRun, record: Any, now: datetime,
             eval_failure: str | None) -> tuple[Verdict | None, int, dict[str, Any]]:
    """Everything a check reads from outcomes: the judge's verdict, samples, the eval gate, shadow spend."""
    state = record.state
    verdict, samples = _judge(session, run, record.flag_id, state)
    extra: dict[str, Any] = {"eval_outcome": _eval_outcome(session, run, state, eval_failure),
                             **_shadow_spend(session, run, record.flag_id, state, now)}
    return verdict, samples, extra


def _rolled_back_by_hand(session: Any, run: RolloutRun, phase: Phase, state: RolloutState) -> str | None:
    if phase is not Phase.ROLLED_BACK or state.status is Status.PENDING:
        return None
    entries = [e for e in flag_store.audit_log(session, run.plan.flag, namespace=run.namespace, limit=20)
               if e.action == "flag.rollback"]
    return f"{entries[0].actor}: {entries[0].reason}" if entries else "the flag was rolled back"


def _eval_outcome(session: Any, run: RolloutRun, state: RolloutState, failure: str | None) -> EvalOutcome | None:
    if state.status is not Status.EVALUATING:
        return None
    if failure is not None:
        return EvalOutcome(False, f"the eval could not run: {failure}")
    stage = run.plan.stages[state.stage_index]
    assert stage.eval is not None
    try:
        outcome, _ = gate_outcome(session, run.rollout_id, state.stage_index, stage.eval,
                                  variants=(run.plan.baseline, run.plan.candidate), alpha=run.plan.alpha)
    except InvalidInputError as exc:
        return EvalOutcome(False, f"the eval could not run: {exc}")
    return outcome


def _shadow_spend(session: Any, run: RolloutRun, flag_id: int, state: RolloutState, now: datetime) -> dict[str, float]:
    """The candidate's spend in this shadow stage, in total and over the last hour, summed by SQL."""
    if state.status is not Status.SHADOW or state.stage_index < 0:
        return {}
    budget = run.plan.stages[state.stage_index].budget
    if budget is None:
        return {}
    meter = {"flag_id": flag_id, "rollout_id": run.rollout_id, "stage": state.stage_index,
             "variant": run.plan.candidate, "metric": budget.cost_metric}
    total = outcome_store.spend(session, **meter)
    hour = outcome_store.spend(session, **meter, since=now - timedelta(hours=1))
    return {"shadow_spend_total": total, "shadow_spend_hour": hour}


def _judge(session: Any, run: RolloutRun, flag_id: int, state: RolloutState) -> tuple[Verdict | None, int]:
    """The judge's verdict on the stage in force (and the live stages before it), and its samples per arm."""
    plan = run.plan
    if state.stage_index < 0:
        return None, 0
    stage = plan.stages[state.stage_index]
    if stage.kind is StageKind.EVAL:
        return None, 0
    if stage.kind is StageKind.SHADOW:
        return _judge_shadow(session, run, flag_id, state)
    if stage.live:
        stages = {i for i, st in enumerate(plan.stages[: state.stage_index + 1]) if st.live}
    else:
        stages = {state.stage_index}
    allocation_bp = {(name, i): bp for i in stages if plan.stages[i].live
                     for name, bp in plan.stages[i].allocations.items()}
    recorded = sorted({m.metric for m in plan.metrics})  # a p95 spec reads its source metric
    quantiles = [m for m in plan.metrics if m.quantile is not None]
    # Only the stages judged, so per-unit sums (and their cross-stage terms) cover exactly those.
    evidence = load_evidence(session, flag_id=flag_id, rollout_id=run.rollout_id, metrics=recorded,
                             baseline=plan.baseline, candidate=plan.candidate, allocation_bp=allocation_bp,
                             histograms=sorted({m.metric for m in quantiles}), stages=sorted(stages),
                             quantiles=quantiles)
    # Samples are units (what min_samples counts), in the stage in force, in the smaller arm.
    samples = min(
        (sum(_stage_units(u, state.stage_index) for (m, v, _s, series), u in evidence.clusters.items()
             if m == metric and v == variant and series == "linear")
         for metric in recorded for variant in (plan.baseline, plan.candidate)),
        default=0,
    )
    sizing = judge_sizing(stage)
    verdict = judge(evidence, plan.metrics, alpha=plan.alpha, min_samples=sizing.min_samples,
                    planned_samples=sizing.planned_samples, completion=plan.completion)
    return verdict, samples


def _stage_units(sums: Any, stage: int) -> int:
    return dict(zip(sums.stages, sums.units, strict=True)).get(stage, 0)


def _judge_shadow(session: Any, run: RolloutRun, flag_id: int, state: RolloutState) -> tuple[Verdict | None, int]:
    """Shadow: both arms answered the same requests, so compare them pair by pair (far tighter than two arms)."""
    plan = run.plan
    stage = plan.stages[state.stage_index]
    paired_metrics = [m for m in plan.metrics if m.quantile is None]  # a quantile has no per-pair difference
    recorded = sorted({m.metric for m in paired_metrics})
    evidence = load_paired_evidence(session, flag_id=flag_id, rollout_id=run.rollout_id, metrics=recorded,
                                    baseline=plan.baseline, candidate=plan.candidate, stages=[state.stage_index])
    samples = min((sum(p.n for (m, _s, _g), p in evidence.pairs.items() if m == metric) for metric in recorded),
                  default=0)
    sizing = judge_sizing(stage)
    verdict = judge_paired(evidence, paired_metrics, alpha=plan.alpha, min_samples=sizing.min_samples,
                           planned_samples=sizing.planned_samples)
    return verdict, samples


def _apply(session: Any, run: RolloutRun, step: Step, version: int) -> None:
    """The controller's flag effects, with compare-and-set on the version the check read.

    A manual rollback that lands between our read and this write bumps the
    version, so the write fails and the rollback wins.
    """
    plan = run.plan
    for effect in step.effects:
        if isinstance(effect, SetAllocations):
            stage = plan.stages[effect.stage_index].name
            if effect.phase == "shadow":
                flag_store.set_shadow(session, plan.flag, effect.shadow_bp, actor=CONTROLLER,
                                      reason=f"stage {stage}", namespace=run.namespace, expected_version=version)
            elif effect.phase == "promoted":
                flag_store.promote(session, plan.flag, actor=CONTROLLER, reason=step.reason,
                                   namespace=run.namespace, expected_version=version)
            else:
                flag_store.set_allocations(session, plan.flag, dict(effect.allocations), actor=CONTROLLER,
                                           reason=f"stage {stage}", namespace=run.namespace,
                                           expected_version=version)
            version += 1
        elif isinstance(effect, RollBack):
            flag_store.rollback(session, plan.flag, actor=CONTROLLER, reason=effect.reason,
                                namespace=run.namespace, expected_version=version)
            version += 1
        elif isinstance(effect, RequestApproval):
            log.info("rollout %s: %s", plan.flag, effect.reason)


def decision_details(verdict: Verdict | None, samples: int) -> dict[str, Any]:
    """What the decisions table keeps of a verdict: enough to explain it and to plot the bounds later."""
    if verdict is None:
        return {"samples": samples, "metrics": [], "strata": [], "health": []}

    def clean(x: float) -> float | None:
        return None if x is None or not math.isfinite(x) else round(float(x), 6)

    def metric(r: Any) -> dict[str, Any]:
        return {"metric": r.metric, "stratum": r.stratum, "verdict": r.verdict.value, "code": r.code.value,
                "estimate": clean(r.estimate), "lower": clean(r.lower), "upper": clean(r.upper),
                "margin": clean(r.margin), "n_baseline": r.n_baseline, "n_candidate": r.n_candidate,
                "baseline": clean(r.baseline_value), "candidate": clean(r.candidate_value),
                "p_value": clean(r.p_value), "reason": r.reason}

    return {
        "samples": samples,
        "decision": verdict.decision.value,
        "reason": verdict.reason,
        "metrics": [metric(r) for r in verdict.metrics],
        "strata": [metric(r) for r in verdict.strata if r.verdict.value in ("harm",)],
        "health": [{"name": h.name, "ok": h.ok, "code": h.code.value, "reason": h.reason} for h in verdict.health],
    }


def run_eval_stage(run: RolloutRun, stage_index: int) -> tuple[str | None, int]:
    """Run an eval stage's cases (those not stored yet). Returns (why it could not run, or None; results written)."""
    from rollout.app.evals import run_eval

    stage = run.plan.stages[stage_index]
    assert stage.eval is not None
    try:
        written = run_eval(run.engine, run.rollout_id, stage_index, stage.eval,
                           variants=(run.plan.baseline, run.plan.candidate))
    except InvalidInputError as exc:
        return str(exc), 0
    return None, written
