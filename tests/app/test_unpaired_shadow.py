"""Shadow outcomes an app records itself, without a pair_id: judged as two arms, and never waited on silently."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, insert

from rollout.app.plans import load_plan
from rollout.app.reconcile import check, claim
from rollout.app.status import rollout_status
from rollout.core.controller import Event, Status
from rollout.store.db import transaction
from rollout.store.models import Outcome, utcnow
from rollout.store.outcomes import flag_ids

PLAN: dict[str, Any] = {
    "flag": "summarizer", "baseline": "current", "candidate": "new-model",
    "stages": [{"name": "shadow", "kind": "shadow", "sample": 0.5, "min_samples": 20},
               {"name": "full", "kind": "full"}],
    "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.05}],
    "check_interval": "30s",
}
NOTE = "unpaired: {n} outcomes; paired comparison needs shadow() or pair_id"


def record_errors(engine: Engine, rollout_id: int, variant: str, units: int, error_every: int, *,
                  pair_id: bool = False) -> None:
    """One error outcome per unit, as `record(unit, {"error": ...}, variant=...)` stores it (no pair_id)."""
    with transaction(engine) as s:
        flag_id = flag_ids(s)["summarizer"]
        s.execute(insert(Outcome), [
            {"flag_id": flag_id, "rollout_id": rollout_id, "stage": 0, "variant": variant, "stratum": "default",
             "unit_hash": i, "metric": "error", "value": float(i % error_every == 0), "recorded_at": utcnow(),
             "pair_id": (i + 1) if pair_id else None}
            for i in range(units)])


def test_a_candidate_failing_in_unpaired_shadow_outcomes_is_rolled_back(engine: Engine) -> None:
    # Given a shadow stage in which the app recorded the candidate's outcomes itself, without pair_id:
    # the candidate fails one request in two, the baseline one in fifty
    run = claim(engine, load_plan(PLAN), PLAN, owner="ctl", actor="alice")
    now = utcnow()
    assert check(run, now).step.state.status is Status.SHADOW
    record_errors(engine, run.rollout_id, "current", 400, 50)
    record_errors(engine, run.rollout_id, "new-model", 200, 2)
    # When the controller checks
    result = check(run, now + timedelta(seconds=30))
    # Then the two arms are compared as independent ones, and the harm rolls back
    assert result.step.state.status is Status.ROLLED_BACK, result.step.reason
    assert "error" in result.step.reason
    # And status says the comparison was unpaired, and how to pair it
    with transaction(engine) as s:
        view = rollout_status(s, "summarizer")
    assert view.rollout.unpaired == 200
    assert view.rollout.to_json()["unpaired_note"] == NOTE.format(n=200)


def test_a_healthy_candidate_in_unpaired_shadow_outcomes_is_judged_and_named(engine: Engine) -> None:
    # Given unpaired shadow outcomes of a candidate as good as the baseline
    run = claim(engine, load_plan(PLAN), PLAN, owner="ctl", actor="alice")
    now = utcnow()
    check(run, now)
    record_errors(engine, run.rollout_id, "current", 60, 30)
    record_errors(engine, run.rollout_id, "new-model", 60, 30)
    # When the controller checks
    result = check(run, now + timedelta(seconds=30))
    # Then the judge sees samples (the stage makes progress) and the reason names the unpaired outcomes
    assert result.step.state.status is Status.SHADOW
    assert result.details["samples"] == 60
    assert NOTE.format(n=60) in result.step.reason


def test_paired_outcomes_are_still_compared_pair_by_pair(engine: Engine) -> None:
    # Given shadow pairs, as shadow() records them, and no unpaired candidate outcome
    run = claim(engine, load_plan(PLAN), PLAN, owner="ctl", actor="alice")
    now = utcnow()
    check(run, now)
    record_errors(engine, run.rollout_id, "current", 60, 30, pair_id=True)
    record_errors(engine, run.rollout_id, "new-model", 60, 30, pair_id=True)
    # When the controller checks
    result = check(run, now + timedelta(seconds=30))
    # Then there is nothing unpaired to say
    assert result.details["samples"] == 60 and "unpaired" not in result.details
    assert "unpaired" not in result.step.reason


def test_a_shadow_stage_without_any_evidence_is_held_after_an_hour(engine: Engine) -> None:
    # Given a shadow stage (no max_duration, no stall_after) in which nothing is ever recorded
    run = claim(engine, load_plan(PLAN), PLAN, owner="ctl", actor="alice")
    now = utcnow()
    check(run, now)
    # When the controller checks before and after an hour
    before = check(run, now + timedelta(minutes=59))
    after = check(run, now + timedelta(hours=1))
    # Then it waits at first, and is then held with the reason and the held event
    assert before.step.state.status is Status.SHADOW
    assert after.step.state.status is Status.HELD
    assert "made no progress in 1h" in after.step.reason
    assert Event.HELD in [e.event for e in run.events]
