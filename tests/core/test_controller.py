"""Every transition of the controller's table, with a fake clock: no database, no Prefect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rollout.core.controller import (
    EvalOutcome,
    RunEval,
    ApprovalInput,
    Emit,
    Observation,
    RequestApproval,
    RollBack,
    RolloutState,
    SetAllocations,
    Status,
    next_step,
)
from rollout.app.plans import load_plan
from rollout.core.stats import Code, Decision, HealthCheck, Verdict

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
PLAN = load_plan("""
flag: ticket-summarizer
baseline: current
candidate: new-model
strata:
  - {name: internal, match: {attribute: email_domain, in: [example.com]}}
  - {name: free, match: {attribute: tier, equals: free}}
stages:
  - {name: shadow, kind: shadow, sample: 0.10, min_samples: 500, min_duration: 10m}
  - {name: canary, kind: ramp, percent: {internal: 100, free: 5, default: 0}, min_samples: 1000, min_duration: 30m, max_duration: 24h}
  - {name: quarter, kind: ramp, percent: 25, approval: required}
  - {name: full, kind: full, approval: required}
metrics:
  - {name: error, kind: binary, better: lower, margin: 0.005}
approval_timeout: 1h
""")
ROLLBACK_PLAN = load_plan({**{"flag": "f", "baseline": "a", "candidate": "b",
                              "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.01}]},
                           "stages": [{"name": "canary", "kind": "ramp", "percent": 5, "max_duration": "1h"},
                                      {"name": "full", "kind": "full", "approval": "required"}],
                           "on_inconclusive": "rollback", "on_approval_timeout": "rollback",
                           "approval_timeout": "2h"})
GATED_FIRST = load_plan({"flag": "f", "baseline": "a", "candidate": "b",
                         "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.01}],
                         "stages": [{"name": "canary", "kind": "ramp", "percent": 5, "approval": "required"}]})


def verdict(decision: Decision, reason: str = "because", srm: bool = False) -> Verdict:
    health = (HealthCheck("sample_ratio", False, Code.SAMPLE_RATIO_MISMATCH, "ratio off"),) if srm else ()
    return Verdict(decision, reason, (), (), health)


def state(status: Status, stage: int, *, started: timedelta = timedelta(0), waiting_for: int | None = None,
          waiting: timedelta = timedelta(0)) -> RolloutState:
    return RolloutState(status, stage, T0 - started, waiting_for, (T0 - waiting) if waiting_for is not None else None, "")


PASS, CONT, HOLD, HARM = (verdict(Decision.PASS), verdict(Decision.CONTINUE), verdict(Decision.HOLD, "too few"),
                          verdict(Decision.ROLLBACK, "error +1.2 pp"))
SRM = verdict(Decision.HOLD, "sample ratio mismatch", srm=True)
YES = ApprovalInput(2, True, "alice")
NO = ApprovalInput(2, False, "bob", "not today")

CASES = [
    # (name, plan, state, observation, approvals, expected status, expected stage, expected action, effect types)
    ("start enters the shadow stage", PLAN, RolloutState(), Observation(), [],
     Status.SHADOW, 0, "enter_stage", [SetAllocations, Emit]),
    ("start with a gated first stage waits for approval", GATED_FIRST, RolloutState(), Observation(), [],
     Status.AWAITING_APPROVAL, -1, "request_approval", [RequestApproval, Emit]),
    ("shadow keeps collecting while inconclusive", PLAN, state(Status.SHADOW, 0, started=timedelta(hours=1)),
     Observation(CONT, 5_000), [], Status.SHADOW, 0, "continue", []),
    ("shadow does not pass before min_samples", PLAN, state(Status.SHADOW, 0, started=timedelta(hours=1)),
     Observation(PASS, 499), [], Status.SHADOW, 0, "continue", []),
    ("shadow does not pass before min_duration", PLAN, state(Status.SHADOW, 0, started=timedelta(minutes=9)),
     Observation(PASS, 5_000), [], Status.SHADOW, 0, "continue", []),
    ("shadow passes into the canary", PLAN, state(Status.SHADOW, 0, started=timedelta(minutes=10)),
     Observation(PASS, 500), [], Status.RAMPING, 1, "enter_stage", [SetAllocations, Emit]),
    ("too little data only waits", PLAN, state(Status.RAMPING, 1, started=timedelta(hours=1)),
     Observation(HOLD, 10), [], Status.RAMPING, 1, "continue", []),
    ("a sample ratio mismatch holds for a human", PLAN, state(Status.RAMPING, 1, started=timedelta(hours=1)),
     Observation(SRM, 5_000), [], Status.HELD, 1, "hold", [Emit]),
    ("harm rolls back", PLAN, state(Status.RAMPING, 1), Observation(HARM, 100), [],
     Status.ROLLED_BACK, 1, "rollback", [RollBack, Emit]),
    ("a canary pass asks for approval of the quarter", PLAN, state(Status.RAMPING, 1, started=timedelta(hours=1)),
     Observation(PASS, 1_000), [], Status.AWAITING_APPROVAL, 1, "request_approval", [RequestApproval, Emit]),
    ("max_duration without a pass holds (on_inconclusive: hold)", PLAN,
     state(Status.RAMPING, 1, started=timedelta(hours=24)), Observation(CONT, 50_000), [],
     Status.HELD, 1, "hold", [Emit]),
    ("max_duration without a pass rolls back (on_inconclusive: rollback)", ROLLBACK_PLAN,
     state(Status.RAMPING, 0, started=timedelta(hours=1)), Observation(CONT, 50_000), [],
     Status.ROLLED_BACK, 0, "rollback", [RollBack, Emit]),
    ("waiting keeps waiting without an answer", PLAN,
     state(Status.AWAITING_APPROVAL, 1, waiting_for=2, waiting=timedelta(minutes=5)), Observation(CONT, 10), [],
     Status.AWAITING_APPROVAL, 1, "wait", []),
    ("an approval enters the stage", PLAN, state(Status.AWAITING_APPROVAL, 1, waiting_for=2),
     Observation(CONT, 10), [YES], Status.RAMPING, 2, "enter_stage", [SetAllocations, Emit]),
    ("a rejection rolls back", PLAN, state(Status.AWAITING_APPROVAL, 1, waiting_for=2),
     Observation(CONT, 10), [NO], Status.ROLLED_BACK, 1, "rollback", [RollBack, Emit]),
    ("the latest answer wins", PLAN, state(Status.AWAITING_APPROVAL, 1, waiting_for=2),
     Observation(CONT, 10), [NO, YES], Status.RAMPING, 2, "enter_stage", [SetAllocations, Emit]),
    ("answers about other stages are ignored", PLAN, state(Status.AWAITING_APPROVAL, 1, waiting_for=2),
     Observation(CONT, 10), [ApprovalInput(3, True, "eve")], Status.AWAITING_APPROVAL, 1, "wait", []),
    ("harm rolls back even while waiting for a human", PLAN, state(Status.AWAITING_APPROVAL, 1, waiting_for=2),
     Observation(HARM, 10), [YES], Status.ROLLED_BACK, 1, "rollback", [RollBack, Emit]),
    ("approval timeout holds (on_approval_timeout: hold)", PLAN,
     state(Status.AWAITING_APPROVAL, 1, waiting_for=2, waiting=timedelta(hours=1)), Observation(CONT, 10), [],
     Status.HELD, 1, "hold", [Emit]),
    ("approval timeout rolls back (on_approval_timeout: rollback)", ROLLBACK_PLAN,
     state(Status.AWAITING_APPROVAL, 0, waiting_for=1, waiting=timedelta(hours=2)), Observation(CONT, 10), [],
     Status.ROLLED_BACK, 0, "rollback", [RollBack, Emit]),
    ("held goes on when a human approves", PLAN, state(Status.HELD, 1, waiting_for=2, waiting=timedelta(days=3)),
     Observation(CONT, 10), [YES], Status.RAMPING, 2, "enter_stage", [SetAllocations, Emit]),
    ("held has no timeout", PLAN, state(Status.HELD, 1, waiting_for=2, waiting=timedelta(days=30)),
     Observation(CONT, 10), [], Status.HELD, 1, "wait", []),
    ("held rolls back when a human rejects", PLAN, state(Status.HELD, 1, waiting_for=2),
     Observation(CONT, 10), [NO], Status.ROLLED_BACK, 1, "rollback", [RollBack, Emit]),
    ("approving the full stage promotes", PLAN, state(Status.AWAITING_APPROVAL, 2, waiting_for=3),
     Observation(PASS, 10), [ApprovalInput(3, True, "alice")], Status.PROMOTED, 3, "promote", [SetAllocations, Emit]),
    ("passing the last stage of a plan without a full stage completes it", GATED_FIRST,
     state(Status.RAMPING, 0), Observation(PASS, 10), [], Status.PROMOTED, 0, "promote", [Emit]),
    ("a rollback by hand ends the rollout without touching the flag", PLAN, state(Status.RAMPING, 2),
     Observation(PASS, 10, rolled_back_by_hand="carol: manual"), [], Status.ROLLED_BACK, 2, "rolled_back_by_hand", [Emit]),
    ("a rollback by hand also ends a wait", PLAN, state(Status.AWAITING_APPROVAL, 1, waiting_for=2),
     Observation(None, 0, rolled_back_by_hand="carol"), [YES], Status.ROLLED_BACK, 1, "rolled_back_by_hand", [Emit]),
    ("promoted is final", PLAN, state(Status.PROMOTED, 3), Observation(HARM, 10), [],
     Status.PROMOTED, 3, "none", []),
    ("rolled back is final", PLAN, state(Status.ROLLED_BACK, 1), Observation(PASS, 10), [YES],
     Status.ROLLED_BACK, 1, "none", []),
    ("aborted is final", PLAN, state(Status.ABORTED, 1), Observation(PASS, 10), [],
     Status.ABORTED, 1, "none", []),
]


def test_entering_a_stage_sets_the_plans_allocations_and_starts_its_clock() -> None:
    step = next_step(PLAN, state(Status.SHADOW, 0, started=timedelta(hours=1)), Observation(PASS, 10_000), [], T0)
    effect = step.effects[0]
    assert isinstance(effect, SetAllocations)
    assert (effect.phase, dict(effect.allocations)) == ("ramping", {"internal": 10_000, "free": 500, "default": 0})
    assert step.state.stage_started_at == T0


def test_entering_shadow_sets_the_sample_share() -> None:
    effect = next_step(PLAN, RolloutState(), Observation(), [], T0).effects[0]
    assert isinstance(effect, SetAllocations) and (effect.phase, effect.shadow_bp) == ("shadow", 1_000)


def test_a_rejection_names_who_and_why() -> None:
    step = next_step(PLAN, state(Status.AWAITING_APPROVAL, 1, waiting_for=2), Observation(CONT, 10), [NO], T0)
    assert step.effects[0] == RollBack("stage quarter rejected by bob: not today")


def test_the_reason_for_waiting_says_what_is_missing() -> None:
    step = next_step(PLAN, state(Status.RAMPING, 1, started=timedelta(minutes=5)), Observation(PASS, 200), [], T0)
    assert "200 of 1000 samples" in step.reason and "5m of 30m" in step.reason


EVAL_PLAN = load_plan({
    "flag": "f", "baseline": "a", "candidate": "b",
    "stages": [
        {"name": "offline", "kind": "eval", "eval": {"cases": "cases.jsonl", "baseline": "app:base",
                                                     "candidate": "app:cand", "scorer": "app:score"}},
        {"name": "shadow", "kind": "shadow", "sample": 0.2, "budget": {"per_hour": 1.0, "total": 5.0}},
        {"name": "canary", "kind": "ramp", "percent": 5},
    ],
    "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.01}],
})
SHADOWING = state(Status.SHADOW, 1, started=timedelta(minutes=5))

EXTRA_CASES = [
    ("start with an eval stage runs the eval", EVAL_PLAN, RolloutState(), Observation(), [],
     Status.EVALUATING, 0, "enter_stage", [RunEval, Emit]),
    ("the eval still running", EVAL_PLAN, state(Status.EVALUATING, 0), Observation(), [],
     Status.EVALUATING, 0, "continue", []),
    ("a passed eval gate enters shadow", EVAL_PLAN, state(Status.EVALUATING, 0),
     Observation(eval_outcome=EvalOutcome(True, "non-inferior in every category")), [],
     Status.SHADOW, 1, "enter_stage", [SetAllocations, Emit]),
    ("a failed eval gate rolls back before anyone sees the candidate", EVAL_PLAN, state(Status.EVALUATING, 0),
     Observation(eval_outcome=EvalOutcome(False, "billing: pass rate down 30 points")), [],
     Status.ROLLED_BACK, 0, "rollback", [RollBack, Emit]),
    ("shadow spend over the hourly budget pauses shadowing", EVAL_PLAN, SHADOWING,
     Observation(CONT, 10, shadow_spend_hour=1.2, shadow_spend_total=1.2), [],
     Status.SHADOW, 1, "pause_shadow", [SetAllocations]),
    ("paused and still over budget stays paused", EVAL_PLAN, SHADOWING,
     Observation(CONT, 10, shadow_spend_hour=0.2, shadow_spend_total=5.0, shadow_sampling=False), [],
     Status.SHADOW, 1, "continue", []),
    ("the hour frees up: shadowing resumes", EVAL_PLAN, SHADOWING,
     Observation(CONT, 10, shadow_spend_hour=0.2, shadow_spend_total=2.0, shadow_sampling=False), [],
     Status.SHADOW, 1, "resume_shadow", [SetAllocations]),
    ("harm in shadow rolls back even over budget", EVAL_PLAN, SHADOWING,
     Observation(HARM, 10, shadow_spend_hour=9, shadow_spend_total=9), [],
     Status.ROLLED_BACK, 1, "rollback", [RollBack, Emit]),
]


@pytest.mark.parametrize(("name", "plan", "before", "obs", "approvals", "status", "stage", "action", "effects"),
                         CASES + EXTRA_CASES, ids=[c[0] for c in CASES + EXTRA_CASES])
def test_transition(name, plan, before, obs, approvals, status, stage, action, effects) -> None:  # type: ignore[no-untyped-def]
    # Given the state before, When the controller looks at this observation at T0
    step = next_step(plan, before, obs, approvals, T0)
    # Then it lands where the table says, with these effects, and says why
    assert (step.state.status, step.state.stage_index, step.action) == (status, stage, action)
    assert [type(e) for e in step.effects] == effects
    assert step.reason


def test_pausing_shadow_sets_the_sample_to_zero_and_resuming_restores_it() -> None:
    paused = next_step(EVAL_PLAN, SHADOWING, Observation(CONT, 10, shadow_spend_total=6), [], T0).effects[0]
    resumed = next_step(EVAL_PLAN, SHADOWING, Observation(CONT, 10, shadow_sampling=False), [], T0).effects[0]
    assert (paused.shadow_bp, resumed.shadow_bp) == (0, 2_000)


# --- a stage that cannot make progress is held, never left waiting silently ---------------------------

STALL_PLAN = load_plan({"flag": "f", "baseline": "a", "candidate": "b",
                        "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.01}],
                        "stages": [{"name": "shadow", "kind": "shadow", "sample": 0.1},
                                   {"name": "timed", "kind": "ramp", "percent": 5, "max_duration": "3h"},
                                   {"name": "set", "kind": "ramp", "percent": 10, "max_duration": "3h",
                                    "stall_after": "20m"},
                                   {"name": "full", "kind": "full"}]})
NO_DATA = verdict(Decision.HOLD, "Hold: error: no outcomes in either arm yet.")


@pytest.mark.parametrize(("stage", "status", "elapsed", "samples", "unpaired", "expected"), [
    # no stall_after nor max_duration: 1 h
    (0, Status.SHADOW, timedelta(minutes=59), 0, 0, Status.SHADOW),
    (0, Status.SHADOW, timedelta(hours=1), 0, 0, Status.HELD),
    # evidence coming in is progress, however slow
    (0, Status.SHADOW, timedelta(hours=5), 3, 0, Status.SHADOW),
    # max_duration is the default; reaching it applies on_inconclusive (hold) first
    (1, Status.RAMPING, timedelta(hours=2), 0, 0, Status.RAMPING),
    (1, Status.RAMPING, timedelta(hours=3), 0, 0, Status.HELD),
    # stall_after set in the plan wins over max_duration
    (2, Status.RAMPING, timedelta(minutes=19), 0, 0, Status.RAMPING),
    (2, Status.RAMPING, timedelta(minutes=20), 0, 0, Status.HELD),
    # shadow outcomes that can be neither paired nor compared
    (0, Status.SHADOW, timedelta(hours=1), 0, 7, Status.HELD),
])
def test_a_stage_without_evidence_is_held_after_its_stall_limit(stage, status, elapsed, samples, unpaired,
                                                                 expected) -> None:  # type: ignore[no-untyped-def]
    # Given a stage that has seen `samples` units per arm since it started `elapsed` ago
    before = state(status, stage, started=elapsed)
    # When the controller checks
    step = next_step(STALL_PLAN, before, Observation(NO_DATA, samples, unpaired=unpaired), [], T0)
    # Then it holds (with the held event and the reason) once the stall limit is reached, and not before
    assert step.state.status is expected, step.reason
    if expected is Status.HELD:
        assert any(isinstance(e, Emit) and e.event.value == "rollout.held" for e in step.effects)
        assert "no outcomes in either arm yet" in step.reason or "max_duration" in step.reason
        assert step.state.waiting_for == stage + 1


def test_unpaired_shadow_outcomes_are_named_in_the_reason() -> None:
    # Given a shadow stage whose candidate outcomes came without a pair_id
    before = state(Status.SHADOW, 0, started=timedelta(hours=1))
    # When the controller checks and the stage has been without evidence for its stall limit
    step = next_step(STALL_PLAN, before, Observation(NO_DATA, 0, unpaired=7), [], T0)
    # Then the hold says how many were unpaired and how to pair them
    assert step.state.status is Status.HELD
    assert "made no progress in 1h" in step.reason
    assert "unpaired: 7 outcomes; paired comparison needs shadow() or pair_id" in step.reason
    # And before that, the waiting reason says so too
    waiting = next_step(STALL_PLAN, state(Status.SHADOW, 0, started=timedelta(minutes=5)),
                        Observation(NO_DATA, 0, unpaired=7), [], T0)
    assert waiting.action == "continue" and "unpaired: 7 outcomes" in waiting.reason
