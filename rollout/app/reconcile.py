"""One check of a rollout: load, judge, decide, apply, record. Everything outside goes through rollout.ports.

Two transactions: the evidence is read and judged first, without any lock
(the evidence source opens its own), because aggregating outcomes can take a
while. The decision is then made and applied in a short write transaction,
which re-reads the rollout and drops the verdict if the stage moved in between.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rollout.core.controller import (
    Action,
    Emit,
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
from rollout.core.plan import RolloutPlan
from rollout.core.policy import lease_for as lease_policy
from rollout.core.records import RolloutRecord
from rollout.core.stats import Verdict
from rollout.errors import VersionConflictError
from rollout.app.verdicts import verdict_json
from rollout.ports import Clock, EvalRunner, EvidenceSource, Store, UnitOfWork

log = logging.getLogger("rollout.controller")
CONTROLLER = "rollout-controller"
RECENT_CHECKS = 20   # how many check durations the lease looks back on


class SystemClock:
    """rollout.ports.Clock: the wall clock (UTC) and time.sleep."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class RolloutRun:
    """What one controller process knows about the rollout it drives, and the ports it drives it through."""

    store: Store
    evidence: EvidenceSource
    plan: RolloutPlan
    document: dict[str, Any]
    owner: str
    rollout_id: int
    namespace: str = "default"
    evals: EvalRunner | None = None
    clock: Clock = field(default_factory=SystemClock)
    events: list[Emit] = field(default_factory=list)
    check_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_CHECKS))
    notice: str = ""      # something a human should read at the next approval form (e.g. an unusable answer)
    judges: dict[str, Any] = field(default_factory=dict)   # the plan's online judges, loaded once (by name)

    @property
    def lease_for(self) -> timedelta:
        return lease_policy(self.plan.check_interval, self.check_seconds)


@dataclass(frozen=True)
class CheckResult:
    step: Step
    verdict: Verdict | None
    sequence: int | None
    owned: bool = True            # False: another controller holds the rollout now; stop quietly
    conflict: bool = False        # the flag changed under us; the next check will see why
    details: dict[str, Any] = field(default_factory=dict)   # the verdict as the decisions table keeps it


def lease_for(plan: RolloutPlan) -> timedelta:
    """The lease before any check was timed."""
    return lease_policy(plan.check_interval)


def claim(source: Any, plan: RolloutPlan, document: dict[str, Any], *, owner: str, actor: str,
          flow_run_id: str | None = None, namespace: str = "default", evidence: EvidenceSource | None = None,
          evals: EvalRunner | None = None, clock: Clock | None = None) -> RolloutRun:
    """Start the rollout (or take over a lost one). Raises RolloutActiveError if it is someone else's.

    `source` is a Store (ports) or, for the SQL store, an Engine.
    """
    store, evidence, evals = _ports(source, namespace, evidence, evals)
    with store.transaction() as unit:
        record = unit.rollouts.start(plan, document, actor=actor, owner=owner, lease_for=lease_for(plan),
                                     flow_run_id=flow_run_id)
    return RolloutRun(store, evidence, plan, document, owner, record.id, namespace, evals, clock or SystemClock())


def _ports(source: Any, namespace: str, evidence: EvidenceSource | None,
           evals: EvalRunner | None) -> tuple[Store, EvidenceSource, EvalRunner | None]:
    from sqlalchemy import Engine

    if not isinstance(source, Engine):
        assert evidence is not None, "a Store other than SQL needs its own evidence source"
        return source, evidence, evals
    from rollout.app.evidence import StoreEvalRunner, StoreEvidence
    from rollout.store.unit import SqlStore

    store = SqlStore(source, namespace)
    return store, evidence or StoreEvidence(store), evals or StoreEvalRunner(source)


def check(run: RolloutRun, now: datetime | None = None, *, eval_failure: str | None = None) -> CheckResult:
    """One check. `eval_failure`: the eval stage's runner could not run (bad case file, import error)."""
    started = run.clock.now()
    now = now or started
    plan = run.plan
    with run.store.transaction() as unit:
        seen = unit.rollouts.get(run.rollout_id)
    observed = run.evidence.observe(plan, seen, now, eval_failure) if seen.state.status.active else None
    try:
        with run.store.transaction() as unit:
            result = _decide_and_apply(run, unit, seen, observed, now, started)
    except VersionConflictError as exc:
        log.info("rollout %s: %s; checking again", plan.flag, exc)
        return CheckResult(Step(seen.state, (), Action.CONFLICT, str(exc)), None, None, conflict=True)
    run.check_seconds.append((run.clock.now() - started).total_seconds())
    run.events.extend(e for e in result.step.effects if isinstance(e, Emit))
    return result


def _decide_and_apply(run: RolloutRun, unit: UnitOfWork, seen: RolloutRecord, observed: Observation | None,
                      now: datetime, started: datetime) -> CheckResult:
    plan = run.plan
    # Lock our rollout row first (flag after), the order a manual rollback uses too. The lease runs from
    # now (not from the check's start) and counts this check's time so far among the recent ones, so even
    # the first slow check cannot outlive its own lease.
    renewed_at = run.clock.now()
    so_far = (renewed_at - started).total_seconds()
    lease = lease_policy(plan.check_interval, [*run.check_seconds, so_far])
    renewed = unit.rollouts.renew_lease(run.rollout_id, owner=run.owner, lease_for=lease, now=renewed_at)
    record = unit.rollouts.get(run.rollout_id)
    if not record.state.status.active:
        # Ended elsewhere: `rollout rollback` by hand ends the active rollout with the flag.
        return CheckResult(Step(record.state, (), Action.NONE, record.state.reason), None, None,
                           owned=record.lease_owner == run.owner)
    if not renewed:
        return CheckResult(Step(record.state, (), Action.NONE, "another controller owns this rollout"),
                           None, None, owned=False)
    state = record.state
    if observed is None or (state.status, state.stage_index) != (seen.state.status, seen.state.stage_index):
        raise VersionConflictError("the stage moved while the evidence was being judged")
    flag = unit.flags.get(plan.flag)
    by_hand = None
    if flag.phase is Phase.ROLLED_BACK and state.status is not Status.PENDING:
        by_hand = unit.flags.last_rollback(plan.flag) or "the flag was rolled back"
    observation = replace(observed, rolled_back_by_hand=by_hand, shadow_sampling=flag.shadow_bp > 0)
    step = next_step(plan, state, observation, unit.rollouts.approvals(run.rollout_id), now)
    # State first: a final state frees the flag, so the rollback below finds no active rollout left to end.
    if not unit.rollouts.save_state(run.rollout_id, step.state, owner=run.owner, now=now):
        raise VersionConflictError("the rollout changed while this check was running")
    _apply(unit, run, step, flag.version)
    verdict = observation.verdict
    details = verdict_json(verdict, observation.stage_samples)
    if observation.unpaired:
        details = {**details, "unpaired": observation.unpaired}   # status says why the shadow comparison is loose
    sequence = unit.rollouts.record_decision(
        run.rollout_id, stage_index=step.state.stage_index,
        verdict=verdict.decision.value if verdict else "none", action=step.action.value, reason=step.reason,
        details=details,
    )
    return CheckResult(step, verdict, sequence, details=details)


def _apply(unit: UnitOfWork, run: RolloutRun, step: Step, version: int) -> None:
    """The controller's flag effects, with compare-and-set on the version the check read.

    A manual rollback that lands between our read and this write bumps the
    version, so the write fails and the rollback wins.
    """
    plan, flags = run.plan, unit.flags
    for effect in step.effects:
        if isinstance(effect, SetAllocations):
            stage = plan.stages[effect.stage_index].name
            if effect.phase is Phase.SHADOW:
                flags.set_shadow(plan.flag, effect.shadow_bp, actor=CONTROLLER, reason=f"stage {stage}",
                                 expected_version=version)
            elif effect.phase is Phase.PROMOTED:
                flags.promote(plan.flag, actor=CONTROLLER, reason=step.reason, expected_version=version)
            else:
                flags.set_allocations(plan.flag, effect.allocations, actor=CONTROLLER, reason=f"stage {stage}",
                                      expected_version=version)
            version += 1
        elif isinstance(effect, RollBack):
            flags.rollback(plan.flag, actor=CONTROLLER, reason=effect.reason, expected_version=version)
            version += 1
        elif isinstance(effect, RequestApproval):
            log.info("rollout %s: %s", plan.flag, effect.reason)


def run_eval_stage(run: RolloutRun, stage_index: int) -> tuple[str | None, int]:
    """Run an eval stage's cases (those not stored yet). Returns (why it could not run, or None; results written)."""
    stage = run.plan.stages[stage_index]
    assert stage.eval is not None
    if run.evals is None:
        return "this controller has no eval runner", 0
    return run.evals.run(run.rollout_id, stage_index, stage.eval, variants=(run.plan.baseline, run.plan.candidate))


__all__ = ["CONTROLLER", "CheckResult", "RolloutRun", "RolloutState", "SystemClock", "check", "claim",
           "lease_for", "run_eval_stage"]
