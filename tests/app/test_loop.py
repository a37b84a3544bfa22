"""The one check loop and the one abort path, on in-memory fakes: no database, no Prefect, no waiting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.app.approvals import record_answer
from rollout.app.loop import Hooks, abort_run, drive
from rollout.app.plans import load_plan
from rollout.app.reconcile import CheckResult, RolloutRun, claim
from rollout.app.runner import run_foreground
from rollout.core.controller import Action, Emit, Event, Observation, Status
from rollout.core.flag import BUCKETS, Phase
from rollout.errors import RolloutActiveError
from rollout.testing import FakeClock, InMemoryStore, ScriptedEvidence, harmful, passing

PLAN: dict[str, Any] = {
    "flag": "summarizer", "baseline": "current", "candidate": "new-model",
    "strata": [{"name": "free", "match": {"attribute": "tier", "equals": "free"}}],
    "stages": [
        {"name": "shadow", "kind": "shadow", "sample": 0.5, "min_samples": 100, "min_duration": "1m"},
        {"name": "canary", "kind": "ramp", "percent": {"free": 20, "default": 10}, "min_samples": 100,
         "min_duration": "1m"},
        {"name": "full", "kind": "full"},
    ],
    "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.05}],
    "check_interval": "10s",
}


def plan_doc(**overrides: Any) -> dict[str, Any]:
    return {**PLAN, **overrides}


def with_approval(doc: dict[str, Any]) -> dict[str, Any]:
    stages = [dict(s) for s in doc["stages"]]
    stages[-1]["approval"] = "required"
    return {**doc, "stages": stages}


class Harness:
    """A claimed rollout on fakes, the events it emitted, and the checks it made."""

    def __init__(self, doc: dict[str, Any], script: Callable[..., Observation] = passing, owner: str = "ctl-1",
                 store: InMemoryStore | None = None) -> None:
        self.clock = store.clock if store else FakeClock()
        self.store = store or InMemoryStore(clock=self.clock)
        self.evidence = ScriptedEvidence(script)
        self.run = claim(self.store, load_plan(doc), doc, owner=owner, actor="alice", evidence=self.evidence,
                         clock=self.clock)
        self.events: list[Emit] = []
        self.results: list[CheckResult] = []
        self.faults: list[BaseException] = []

    def hooks(self, on_check: Callable[[RolloutRun, CheckResult], None] | None = None, **kw: Any) -> Hooks:
        def seen(run: RolloutRun, result: CheckResult) -> None:
            self.results.append(result)
            if on_check is not None:
                on_check(run, result)

        return Hooks(on_check=seen, emit=lambda run, e: self.events.append(e),
                     on_fault=lambda exc, wait: self.faults.append(exc), **kw)

    def status(self) -> Status:
        return self.store.rollout(self.run.rollout_id).state.status

    def stage(self) -> str:
        index = self.store.rollout(self.run.rollout_id).state.stage_index
        return self.run.plan.stages[index].name if index >= 0 else "-"

    @property
    def actions(self) -> list[Action]:
        return [r.step.action for r in self.results]


def test_a_healthy_candidate_goes_through_every_stage_to_everyone() -> None:
    # Given a plan with no approval gate and a judge that sees no harm
    h = Harness(plan_doc())
    # When the loop runs
    ending = drive(h.run, h.hooks())
    # Then the candidate is released to everyone, one decision per check, each stage entered once
    assert ending.state.status is Status.PROMOTED and ending.owned and not ending.lost
    flag = h.store.flag("summarizer")
    assert flag.phase is Phase.PROMOTED and set(flag.allocations.values()) == {BUCKETS}
    assert h.actions.count(Action.ENTER_STAGE) == 2 and h.actions[-1] is Action.PROMOTE
    assert [d.sequence for d in h.store.decisions_of(h.run.rollout_id)] == list(range(1, len(h.results) + 1))
    assert Event.PROMOTED in [e.event for e in h.events]
    # and the minimum durations were waited out on the clock, not skipped
    assert sum(h.clock.slept) >= 120


def test_a_regressed_candidate_is_rolled_back_with_the_judges_reason() -> None:
    # Given a candidate that the judge finds harmful once it serves users
    def script(plan: Any, rollout: Any, now: Any) -> Observation:
        return harmful(plan, rollout, now) if rollout.state.stage_index >= 1 else passing(plan, rollout, now)

    h = Harness(plan_doc(), script)
    # When the loop runs
    ending = drive(h.run, h.hooks())
    # Then the canary is rolled back: everyone on the baseline, the reason names the harm, the event says so
    assert ending.state.status is Status.ROLLED_BACK and "harm proven" in ending.reason
    flag = h.store.flag("summarizer")
    assert flag.phase is Phase.ROLLED_BACK and set(flag.allocations.values()) == {0}
    rolled_back = [e for e in h.events if e.event is Event.ROLLED_BACK]
    assert len(rolled_back) == 1 and "harm proven" in rolled_back[0].payload["reason"]


def test_an_approval_gate_waits_for_a_human_and_then_advances() -> None:
    # Given a plan whose last stage needs a human's approval
    h = Harness(with_approval(plan_doc()))
    waited = []

    def release_manager(run: RolloutRun, result: CheckResult) -> None:
        if result.step.state.status is Status.AWAITING_APPROVAL:
            waited.append(result.step.action)
            if len(waited) == 3:  # answers after a while
                assert record_answer(run, 2, approved=True, approver="  bob ") is None

    # When the loop runs
    ending = drive(h.run, h.hooks(release_manager))
    # Then it waited (without advancing) until the answer, and the approver is kept stripped
    assert waited == [Action.REQUEST_APPROVAL, Action.WAIT, Action.WAIT]
    assert ending.state.status is Status.PROMOTED and "approved by bob" in ending.reason


def test_an_unusable_answer_never_crashes_the_controller_it_asks_again() -> None:
    # Given a rollout waiting at its approval gate
    h = Harness(with_approval(plan_doc()))
    problems: list[str | None] = []

    def release_manager(run: RolloutRun, result: CheckResult) -> None:
        if result.step.state.status is Status.AWAITING_APPROVAL:
            # When the answer names no approver (a single space), and later a real one
            who = " " if not problems else "carol"
            problems.append(record_answer(run, 2, approved=True, approver=who))

    ending = drive(h.run, h.hooks(release_manager))
    # Then the blank answer was refused with a reason, the rollout kept waiting, and the next answer counted
    assert problems[0] is not None and "approver" in problems[0] and problems[1] is None
    assert ending.state.status is Status.PROMOTED and "approved by carol" in ending.reason


def test_a_manual_rollback_wins_over_the_controller() -> None:
    # Given a rollout in its canary
    h = Harness(plan_doc())

    def release_manager(run: RolloutRun, result: CheckResult) -> None:
        if result.step.state.status is Status.RAMPING and result.step.action is Action.CONTINUE:
            with h.store.transaction() as unit:  # what `rollout rollback` does
                unit.flags.rollback("summarizer", actor="carol", reason="customers complain")

    # When someone rolls the flag back by hand mid-stage
    ending = drive(h.run, h.hooks(release_manager))
    # Then the rollout ends rolled back by them, and the controller never re-applies its stage
    assert ending.state.status is Status.ROLLED_BACK and "carol" in ending.reason
    assert h.store.flag("summarizer").phase is Phase.ROLLED_BACK
    assert Action.PROMOTE not in h.actions


@pytest.mark.parametrize("outage", [1, 5, 40])
def test_a_database_blip_is_ridden_out_and_the_rollout_goes_on(outage: int) -> None:
    # Given a rollout in its canary
    h = Harness(plan_doc())
    tripped = []

    def blip(run: RolloutRun, result: CheckResult) -> None:
        if result.step.state.status is Status.RAMPING and not tripped:
            tripped.append(True)
            h.store.fail_next(outage)  # When the store refuses the next N transactions

    ending = drive(h.run, h.hooks(blip))
    # Then every failed check was retried with backoff, none was given up, and the rollout finished
    assert len(h.faults) == outage and h.store.pending_failures == 0
    assert ending.state.status is Status.PROMOTED
    assert h.store.flag("summarizer").phase is Phase.PROMOTED


def test_an_interrupt_applies_on_abort_and_says_so() -> None:
    # Given a rollout in its canary, users on the candidate
    h = Harness(plan_doc())
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if h.status() is Status.RAMPING:
            raise KeyboardInterrupt  # When the controller is interrupted (Ctrl-C, SIGTERM)
        h.clock.sleep(seconds)

    ending = drive(h.run, h.hooks(sleep=sleep))
    # Then the plan's on_abort (rollback) is applied, the rollout ends aborted, and an event tells why
    assert ending.state.status is Status.ABORTED and "interrupted" in ending.reason
    assert h.store.flag("summarizer").phase is Phase.ROLLED_BACK
    aborted = [e for e in h.events if e.event is Event.ABORTED]
    assert len(aborted) == 1 and "interrupted" in aborted[0].payload["reason"]


def test_on_abort_hold_leaves_the_allocations_and_ends_the_rollout() -> None:
    # Given a plan that says to hold on abort
    h = Harness(plan_doc(on_abort="hold"))

    def sleep(seconds: float) -> None:
        if h.status() is Status.RAMPING:
            raise KeyboardInterrupt
        h.clock.sleep(seconds)

    # When it is interrupted in the canary
    ending = drive(h.run, h.hooks(sleep=sleep))
    # Then the rollout is aborted but the canary's users stay where they are
    assert ending.state.status is Status.ABORTED
    assert h.store.flag("summarizer").phase is Phase.RAMPING


def test_a_controller_that_cannot_reach_the_database_to_abort_leaves_its_lease_to_expire() -> None:
    # Given a rollout in its canary
    h = Harness(plan_doc())

    def sleep(seconds: float) -> None:
        if h.status() is Status.RAMPING:
            h.store.fail_next(10_000)   # When the database goes away for good, and the controller must stop
            raise KeyboardInterrupt
        h.clock.sleep(seconds)

    ending = drive(h.run, h.hooks(sleep=sleep))
    # Then it changes nothing, says so (LOST), and the lease it left expires so the next controller can take over
    assert ending.lost and "lease will expire" in ending.reason
    assert [e.event for e in h.events][-1] is Event.LOST
    record = h.store.rollout(h.run.rollout_id)
    assert record.state.status is Status.RAMPING and h.store.flag("summarizer").phase is Phase.RAMPING
    # When the database is back and another controller starts once the lease ran out
    h.store.heal()
    h.clock.advance(h.run.lease_for.total_seconds() + 1)
    assert h.store.rollout(h.run.rollout_id).lost(h.clock.now())
    successor = claim(h.store, h.run.plan, PLAN, owner="ctl-2", actor="bob", evidence=h.evidence, clock=h.clock)
    # Then it takes over the same rollout at the same stage and finishes it
    assert successor.rollout_id == h.run.rollout_id
    assert drive(successor, h.hooks()).state.status is Status.PROMOTED


def test_a_crash_in_the_controller_applies_on_abort_and_is_not_hidden() -> None:
    # Given a rollout in its canary
    h = Harness(plan_doc())

    def buggy(run: RolloutRun, result: CheckResult) -> None:
        if result.step.state.status is Status.RAMPING:
            raise RuntimeError("a bug in a view")  # When something unexpected fails in the controller

    with pytest.raises(RuntimeError, match="a bug"):
        drive(h.run, h.hooks(buggy))
    # Then users are not left on the candidate: on_abort was applied before the error went on up
    assert h.status() is Status.ABORTED and h.store.flag("summarizer").phase is Phase.ROLLED_BACK


def test_a_controller_whose_rollout_was_taken_over_stops_without_touching_it() -> None:
    # Given a controller whose lease ran out while it was stuck, and a second controller that took over
    h = Harness(plan_doc())
    taken = []

    def stuck(run: RolloutRun, result: CheckResult) -> None:
        if result.step.state.status is Status.RAMPING and not taken:
            h.clock.advance(3600)
            taken.append(claim(h.store, run.plan, PLAN, owner="ctl-2", actor="bob", evidence=h.evidence,
                               clock=h.clock))

    ending = drive(h.run, h.hooks(stuck))
    # Then the first one stops quietly and leaves the rollout to the second
    assert not ending.owned
    record = h.store.rollout(h.run.rollout_id)
    assert record.lease_owner == "ctl-2" and record.state.status is Status.RAMPING


def test_a_second_controller_is_refused_while_the_first_is_alive() -> None:
    h = Harness(plan_doc())
    with pytest.raises(RolloutActiveError):
        claim(h.store, h.run.plan, PLAN, owner="ctl-2", actor="bob", evidence=h.evidence, clock=h.clock)


def test_the_lease_grows_with_slow_checks_so_a_slow_controller_is_never_lost() -> None:
    # Given checks that take 40 s each on a loaded machine (longer than the 10 s interval)
    def slow(plan: Any, rollout: Any, now: Any) -> Observation:
        h.clock.advance(40)
        return passing(plan, rollout, now)

    h = Harness(plan_doc(), slow)
    lost_seen = []

    def watch(run: RolloutRun, result: CheckResult) -> None:
        record = h.store.rollout(run.rollout_id)
        # `rollout status` looking at the worst moment: just before the next renewal (after a sleep and a check)
        worst = h.clock.now() + run.plan.check_interval + timedelta(seconds=40)
        lost_seen.append(record.lost(worst))

    # When the loop runs
    drive(h.run, h.hooks(watch))
    # Then the controller was never shown lost while it was alive
    assert lost_seen and not any(lost_seen[:-1])
    assert h.run.lease_for >= timedelta(seconds=160)


def test_the_foreground_runner_drives_the_same_loop_on_fakes() -> None:
    # Given the fakes and the foreground runner (`rollout start` without Prefect)
    clock = FakeClock()
    store = InMemoryStore(clock=clock)
    seen: list[CheckResult] = []
    # When it runs a plan
    ending = run_foreground(store, plan_doc(), actor="alice", evidence=ScriptedEvidence(passing), clock=clock,
                            on_check=seen.append)
    # Then it ends promoted, having checked through the same loop
    assert ending.state.status is Status.PROMOTED and seen[-1].step.action is Action.PROMOTE


def test_the_abort_path_does_nothing_for_a_rollout_it_does_not_own() -> None:
    # Given a rollout now owned by another controller
    h = Harness(plan_doc())
    h.store.data.rollouts[h.run.rollout_id] = replace(h.store.rollout(h.run.rollout_id), lease_owner="ctl-2")
    # When this controller aborts
    ending = abort_run(h.run, "stop")
    # Then nothing changed: no abort, no rollback, no event
    assert ending.state.status is Status.PENDING and h.store.flag("summarizer").phase is Phase.INACTIVE
    assert not h.events


@settings(max_examples=30, deadline=None)
@given(outages=st.lists(st.integers(0, 6), min_size=1, max_size=12))
def test_no_pattern_of_blips_changes_what_the_rollout_does(outages: list[int]) -> None:
    # Given a healthy rollout, and outages of any length after any of its checks
    h = Harness(plan_doc())
    pending = list(outages)

    def blips(run: RolloutRun, result: CheckResult) -> None:
        if pending:
            h.store.fail_next(pending.pop(0))

    # When the loop runs through them
    ending = drive(h.run, h.hooks(blips))
    # Then the outcome is the same as without any: promoted, each stage entered once, no decision lost or doubled
    assert ending.state.status is Status.PROMOTED
    assert h.actions.count(Action.ENTER_STAGE) == 2
    decisions = h.store.decisions_of(h.run.rollout_id)
    assert [d.sequence for d in decisions] == list(range(1, len(h.results) + 1))
    # (every injected failure was met and retried, bar those scheduled after the last check that the loop
    # ended before meeting)
    assert len(h.faults) + h.store.pending_failures == sum(outages[: len(outages) - len(pending)])
