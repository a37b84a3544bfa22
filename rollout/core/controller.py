"""The rollout controller: a pure function from (plan, state, evidence, approvals, now) to (state, effects).

The flow calls `next_step` at every check and applies the effects; nothing
here does I/O or reads a clock. The whole behaviour is the table below.

    status             event                                          next status          effects
    -----------------  ---------------------------------------------  -------------------  ---------------------------
    pending            start, first stage needs no approval           shadow|ramping|...   set allocations
    pending            start, first stage needs approval              awaiting_approval    request approval
    entering eval                                                     evaluating           run the eval
    evaluating         no result yet                                  evaluating           (none)
    evaluating         gate passed                                    next stage           (as for a pass)
    evaluating         gate failed                                    rolled_back          roll back (nobody saw it)
    any active         flag rolled back by hand                       rolled_back          (none: it is done already)
    any active         judge proves harm (also while waiting)         rolled_back          roll back
    shadow|ramping     SRM or other untrustworthy data                held                 (alert)
    shadow|ramping     pass + min_samples + min_duration met          next stage           set allocations
                       ... outside every ramp window                  same                 (none: waits for one)
                       ... next stage needs approval                  awaiting_approval    request approval
                       ... no stage left                              promoted
    shadow|ramping     max_duration reached without a pass            held | rolled_back   on_inconclusive
    shadow|ramping     no evidence at all for the stall limit         held                 (alert)
    shadow             budget spent (per hour or in total)            shadow               pause shadowing
    shadow             hourly budget free again                       shadow               resume shadowing
    shadow|ramping     otherwise                                      same                 (none)
    awaiting_approval  approved                                       that stage           set allocations
    awaiting_approval  rejected                                       rolled_back          roll back
    awaiting_approval  approval_timeout reached                       held | rolled_back   on_approval_timeout
    held               approved                                       next stage           set allocations
    held               rejected                                       rolled_back          roll back
    entering full                                                     promoted             set allocations (everyone)
    promoted|rolled_back|aborted  anything                            same                 (none)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from rollout.core.flag import Phase
from rollout.core.plan import Policy, RolloutPlan, StageKind
from rollout.core.policy import stage_name
from rollout.core.stats import Code, Decision, Verdict
from rollout.core.windows import is_open, next_open


class Action(StrEnum):
    """What the controller did at a check, in one word (the decisions table keeps it)."""

    NONE = "none"                    # the rollout is over, or belongs to another controller
    CONTINUE = "continue"            # keep judging the stage in force
    WAIT = "wait"                    # a human must answer first
    ENTER_STAGE = "enter_stage"
    PAUSE_SHADOW = "pause_shadow"
    RESUME_SHADOW = "resume_shadow"
    REQUEST_APPROVAL = "request_approval"
    HOLD = "hold"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    ROLLED_BACK_BY_HAND = "rolled_back_by_hand"
    CONFLICT = "conflict"            # the state moved under the check; nothing applied, check again
    ABORT = "abort"                  # the controller stopped and applied the plan's on_abort


class Event(StrEnum):
    """The Prefect events (and log lines) automations react to; every ending has one."""

    STAGE_CHANGED = "rollout.stage_changed"
    APPROVAL_REQUESTED = "rollout.approval_requested"
    HELD = "rollout.held"
    PROMOTED = "rollout.promoted"
    ROLLED_BACK = "rollout.rolled_back"
    ABORTED = "rollout.aborted"
    LOST = "rollout.lost"


class Status(StrEnum):
    PENDING = "pending"
    EVALUATING = "evaluating"
    SHADOW = "shadow"
    RAMPING = "ramping"
    AWAITING_APPROVAL = "awaiting_approval"
    HELD = "held"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    @property
    def active(self) -> bool:
        return self not in (Status.PROMOTED, Status.ROLLED_BACK, Status.ABORTED)

    @property
    def waiting(self) -> bool:
        """Waiting for a human: the judge still runs, but nothing advances without an answer."""
        return self in (Status.AWAITING_APPROVAL, Status.HELD)


@dataclass(frozen=True, slots=True)
class RolloutState:
    status: Status = Status.PENDING
    stage_index: int = -1                # the stage in force; -1 before the first one starts
    stage_started_at: datetime | None = None
    waiting_for: int | None = None       # the stage a human must approve to go on
    waiting_since: datetime | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ApprovalInput:
    stage_index: int
    approved: bool
    approver: str
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Observation:
    """What the flow saw at this check."""

    verdict: Verdict | None = None     # None: no evidence for the stage in force (nothing live yet)
    stage_samples: int = 0             # smallest per-arm count in the stage in force
    rolled_back_by_hand: str | None = None  # the reason, when someone rolled the flag back outside this rollout
    eval_outcome: EvalOutcome | None = None  # an eval stage's gate, once every case has run
    shadow_spend_hour: float = 0.0     # candidate cost in this shadow stage, over the last hour
    shadow_spend_total: float = 0.0    # and since the stage began
    shadow_sampling: bool = True       # whether the flag currently samples units into shadow
    unpaired: int = 0                  # shadow: candidate outcomes without a pair_id (judged as two arms)


@dataclass(frozen=True, slots=True)
class EvalOutcome:
    passed: bool
    reason: str


# --- effects ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SetAllocations:
    stage_index: int
    phase: Phase                        # SHADOW, RAMPING or PROMOTED
    allocations: Mapping[str, int] = field(default_factory=dict)
    shadow_bp: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "allocations", MappingProxyType(dict(self.allocations)))


@dataclass(frozen=True, slots=True)
class RunEval:
    """Run the eval stage's cases on both variants (the flow does it between checks)."""

    stage_index: int


@dataclass(frozen=True, slots=True)
class RollBack:
    reason: str


@dataclass(frozen=True, slots=True)
class RequestApproval:
    stage_index: int
    stage_name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Emit:
    """A Prefect event, so automations can tell people."""

    event: Event
    payload: Mapping[str, Any] = field(default_factory=dict)


Effect = SetAllocations | RunEval | RollBack | RequestApproval | Emit

LOST = "rollout.lost"
"""Not emitted here: the status view emits it when no controller renews a rollout's lease (nobody judges it)."""


@dataclass(frozen=True, slots=True)
class Step:
    state: RolloutState
    effects: tuple[Effect, ...]
    action: Action   # for the decisions table: what the controller did
    reason: str      # and why, in words


def next_step(
    plan: RolloutPlan,
    state: RolloutState,
    observation: Observation,
    approvals: Sequence[ApprovalInput],
    now: datetime,
) -> Step:
    status = state.status
    if not status.active:
        return Step(state, (), Action.NONE, f"the rollout is {status.value}; nothing to do")
    if status is Status.PENDING:
        return _advance_to(plan, state, 0, now, "rollout started")

    if observation.rolled_back_by_hand is not None:
        reason = f"rolled back by hand: {observation.rolled_back_by_hand}"
        return Step(replace(state, status=Status.ROLLED_BACK, reason=reason, waiting_for=None),
                    (Emit(Event.ROLLED_BACK, {"reason": reason, "by_hand": True}),), Action.ROLLED_BACK_BY_HAND, reason)

    verdict = observation.verdict
    if verdict is not None and verdict.decision is Decision.ROLLBACK:
        return _rollback(state, f"harm proven: {verdict.reason}")

    if status.waiting:
        return _waiting(plan, state, approvals, now)
    if status is Status.EVALUATING:
        return _evaluating(plan, state, observation, now)
    if status is Status.SHADOW and plan.stages[state.stage_index].budget is not None:
        budget_step = _shadow_budget(plan, state, observation)
        if budget_step is not None:
            return budget_step
    return _judging(plan, state, observation, now)


def _evaluating(plan: RolloutPlan, state: RolloutState, obs: Observation, now: datetime) -> Step:
    stage = plan.stages[state.stage_index]
    outcome = obs.eval_outcome
    if outcome is None:
        return Step(state, (), Action.CONTINUE, f"stage {stage.name}: the eval is running")
    if not outcome.passed:
        return _rollback(state, f"eval gate {stage.name} failed: {outcome.reason}")
    return _advance_to(plan, state, state.stage_index + 1, now, f"eval gate {stage.name} passed: {outcome.reason}")


def _shadow_budget(plan: RolloutPlan, state: RolloutState, obs: Observation) -> Step | None:
    """Pause shadowing while the candidate's spend is over budget; resume when the hour frees up."""
    stage = plan.stages[state.stage_index]
    budget = stage.budget
    assert budget is not None
    over = []
    if budget.total is not None and obs.shadow_spend_total >= budget.total:
        over.append(f"total spend {obs.shadow_spend_total:.4g} of {budget.total:g}")
    if budget.per_hour is not None and obs.shadow_spend_hour >= budget.per_hour:
        over.append(f"spend in the last hour {obs.shadow_spend_hour:.4g} of {budget.per_hour:g}")
    if over and obs.shadow_sampling:
        reason = f"stage {stage.name}: shadowing paused, budget reached ({'; '.join(over)})"
        return Step(replace(state, reason=reason), (SetAllocations(state.stage_index, Phase.SHADOW, {}, 0),),
                    Action.PAUSE_SHADOW, reason)
    if over:
        return Step(state, (), Action.CONTINUE, f"stage {stage.name}: shadowing paused, budget reached ({'; '.join(over)})")
    if not obs.shadow_sampling:
        reason = f"stage {stage.name}: budget free again, shadowing resumed"
        return Step(replace(state, reason=reason), (SetAllocations(state.stage_index, Phase.SHADOW, {}, stage.shadow_bp),),
                    Action.RESUME_SHADOW, reason)
    return None


def _judging(plan: RolloutPlan, state: RolloutState, obs: Observation, now: datetime) -> Step:
    stage = plan.stages[state.stage_index]
    elapsed = now - (state.stage_started_at or now)
    verdict = obs.verdict
    if verdict is not None and verdict.decision is Decision.HOLD and _untrustworthy(verdict):
        reason = f"data cannot be trusted: {verdict.reason}"
        return _hold(state, now, reason)
    if (verdict is not None and verdict.decision is Decision.PASS
            and obs.stage_samples >= stage.min_samples and elapsed >= stage.min_duration):
        if not is_open(plan.windows, now):  # harm was checked before: only advancing waits for a window
            return Step(state, (), "continue", f"stage {stage.name} passed; waiting for the ramp window that "
                                               f"opens {next_open(plan.windows, now):%a %Y-%m-%d %H:%M %Z}")
        return _advance_to(plan, state, state.stage_index + 1, now,
                           f"stage {stage.name} passed: {verdict.reason}")
    if stage.max_duration is not None and elapsed >= stage.max_duration:
        reason = f"stage {stage.name} reached its max_duration ({stage.max_duration}) without a verdict"
        if plan.on_inconclusive is Policy.ROLLBACK:
            return _rollback(state, reason)
        return _hold(state, now, reason)
    waiting_on = []
    if verdict is None or verdict.decision is not Decision.PASS:
        waiting_on.append(verdict.reason if verdict is not None else "no evidence yet")
    if obs.unpaired:
        waiting_on.append(unpaired_note(obs.unpaired))
    if obs.stage_samples == 0 and elapsed >= stage.stall_limit:
        # Nothing to judge for this long: a human must look (an app that records nothing, or shadow outcomes
        # that can be neither paired nor compared), rather than the stage waiting silently for ever.
        return _hold(state, now, f"stage {stage.name} made no progress in {_short(stage.stall_limit)}: "
                                 + "; ".join(waiting_on))
    if obs.stage_samples < stage.min_samples:
        waiting_on.append(f"{obs.stage_samples} of {stage.min_samples} samples per arm")
    if elapsed < stage.min_duration:
        waiting_on.append(f"{_short(elapsed)} of {_short(stage.min_duration)} minimum duration")
    return Step(state, (), Action.CONTINUE, f"stage {stage.name}: waiting for " + "; ".join(waiting_on))


def _waiting(plan: RolloutPlan, state: RolloutState, approvals: Sequence[ApprovalInput], now: datetime) -> Step:
    target = state.waiting_for
    assert target is not None
    answer = next((a for a in reversed(approvals) if a.stage_index == target), None)
    name = stage_name(plan, target)
    if answer is not None and not answer.approved:
        comment = f": {answer.comment}" if answer.comment else ""
        return _rollback(state, f"stage {name} rejected by {answer.approver}{comment}")
    if answer is not None:
        return _advance_to(plan, replace(state, waiting_for=None), target, now,
                           f"stage {name} approved by {answer.approver}", approved=True)
    if state.status is Status.AWAITING_APPROVAL and now - (state.waiting_since or now) >= plan.approval_timeout:
        reason = f"no answer on stage {name} within {_short(plan.approval_timeout)}"
        if plan.on_approval_timeout is Policy.ROLLBACK:
            return _rollback(state, reason)
        return Step(replace(state, status=Status.HELD, reason=reason),
                    (Emit(Event.HELD, {"reason": reason}),), Action.HOLD, reason)
    return Step(state, (), Action.WAIT, f"waiting for a human on stage {name}: {state.reason}")


def _advance_to(plan: RolloutPlan, state: RolloutState, index: int, now: datetime, why: str,
                *, approved: bool = False) -> Step:
    if index >= len(plan.stages):
        reason = f"{why}; the plan is complete"
        return Step(replace(state, status=Status.PROMOTED, reason=reason, waiting_for=None),
                    (Emit(Event.PROMOTED, {"reason": reason}),), Action.PROMOTE, reason)
    stage = plan.stages[index]
    if stage.approval and not approved:
        reason = f"{why}; stage {stage.name} needs a human's approval"
        return Step(
            replace(state, status=Status.AWAITING_APPROVAL, waiting_for=index, waiting_since=now, reason=reason),
            (RequestApproval(index, stage.name, reason),
             Emit(Event.APPROVAL_REQUESTED, {"stage": stage.name, "stage_index": index})),
            Action.REQUEST_APPROVAL, reason,
        )
    if stage.kind is StageKind.FULL:
        reason = f"{why}; candidate released to everyone"
        return Step(
            RolloutState(Status.PROMOTED, index, now, None, None, reason),
            (SetAllocations(index, Phase.PROMOTED, stage.allocations),
             Emit(Event.PROMOTED, {"stage": stage.name, "reason": reason})),
            Action.PROMOTE, reason,
        )
    if stage.kind is StageKind.EVAL:
        reason = f"{why}; running eval gate {stage.name}"
        return Step(RolloutState(Status.EVALUATING, index, now, None, None, reason),
                    (RunEval(index), Emit(Event.STAGE_CHANGED, {"stage": stage.name, "stage_index": index})),
                    Action.ENTER_STAGE, reason)
    kind = Status.SHADOW if stage.kind is StageKind.SHADOW else Status.RAMPING
    reason = f"{why}; entering stage {stage.name}"
    effect = (SetAllocations(index, Phase.SHADOW, {}, stage.shadow_bp) if stage.kind is StageKind.SHADOW
              else SetAllocations(index, Phase.RAMPING, stage.allocations))
    return Step(RolloutState(kind, index, now, None, None, reason),
                (effect, Emit(Event.STAGE_CHANGED, {"stage": stage.name, "stage_index": index})),
                Action.ENTER_STAGE, reason)


def _rollback(state: RolloutState, reason: str) -> Step:
    return Step(replace(state, status=Status.ROLLED_BACK, reason=reason, waiting_for=None),
                (RollBack(reason), Emit(Event.ROLLED_BACK, {"reason": reason})), Action.ROLLBACK, reason)


def _hold(state: RolloutState, now: datetime, reason: str) -> Step:
    return Step(replace(state, status=Status.HELD, waiting_for=state.stage_index + 1, waiting_since=now,
                        reason=reason),
                (Emit(Event.HELD, {"reason": reason}),), Action.HOLD, reason)


def unpaired_note(count: int) -> str:
    """What status says about shadow outcomes recorded without a pair_id."""
    return f"unpaired: {count} outcomes; paired comparison needs shadow() or pair_id"


def _untrustworthy(verdict: Verdict) -> bool:
    """A hold that needs a human (broken data), as opposed to one that only needs more samples."""
    return any(not h.ok and h.code is Code.SAMPLE_RATIO_MISMATCH for h in verdict.health)


def _short(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
